import DubfarmCore
import FarmMonitor
import FarmProtocol
import FarmStore
import FarmTestSupport
import Foundation
import LocalFarm
import Testing

/// Where tests leave screenshots and captures for people to look at (`.build/test-artifacts`).
let testArtifacts: URL = {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    let dir = repo.appendingPathComponent(".build/test-artifacts")
    try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}()

/// GETs `url` with curl; throws on an HTTP error.
func httpGet(_ url: String) throws -> String {
    let r = try ProcessControl.run("/usr/bin/curl", ["-sS", "--fail", "--max-time", "30", url], timeout: 40)
    guard r.status == 0 else { throw TestTimeout(description: "GET \(url) failed (\(r.status)): \(r.stderr)") }
    return r.stdout
}

/// Headless Chromium (Debian's `chromium`), isolated in its own profile directory.
enum Chromium {
    static let path = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first { FileManager.default.isExecutableFile(atPath: $0) }
    static var available: Bool { path != nil }

    static func run(_ args: [String], timeout: Double = 120) throws -> ProcessControl.Outcome {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-chromium-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: profile) }
        var base = ["--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars", "--user-data-dir=\(profile.path)"]
        if getuid() == 0 { base.append("--no-sandbox") }
        return try ProcessControl.run(path!, base + args, timeout: timeout)
    }

    /// A live page (one that keeps its update stream open) rendered by a real browser over the
    /// DevTools protocol (tools/browser/render.py): its DOM once the first update has been drawn,
    /// and a screenshot if `screenshot` is given.
    static func renderLive(_ url: String, screenshot: URL? = nil, width: Int = 1280, height: Int = 800) throws -> String {
        let dom = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-dom-\(UUID().uuidString.prefix(8)).html")
        defer { try? FileManager.default.removeItem(at: dom) }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var args = [repo.appendingPathComponent("tools/browser/render.py").path, "--chromium", path!, "--url", url, "--dom", dom.path,
                    "--width", "\(width)", "--height", "\(height)"]
        if let screenshot { args += ["--screenshot", screenshot.path] }
        let r = try ProcessControl.run(repo.appendingPathComponent(".venv/bin/python").path, args, timeout: 120)
        guard r.status == 0 else { throw TestTimeout(description: "render.py \(url) failed (\(r.status)): \(r.stderr.suffix(800))") }
        return try String(contentsOf: dom, encoding: .utf8)
    }

    /// Whether ``renderLive(_:screenshot:width:height:)`` can run: chromium and the .venv's websockets.
    static var canRenderLive: Bool {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let py = repo.appendingPathComponent(".venv/bin/python").path
        guard available, FileManager.default.isExecutableFile(atPath: py),
              let r = try? ProcessControl.run(py, ["-c", "import websockets"], timeout: 60) else { return false }
        return r.status == 0
    }

    static func screenshot(_ url: String, to file: URL, width: Int = 1280, height: Int = 800, budget: Int = 4000) throws {
        try? FileManager.default.removeItem(at: file)
        let r = try run(["--virtual-time-budget=\(budget)", "--window-size=\(width),\(height)", "--screenshot=\(file.path)", url])
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw TestTimeout(description: "chromium made no screenshot (\(r.status)): \(r.stderr.suffix(600))")
        }
    }
}

/// A tmux server of its own (private socket), so tests never touch anyone's sessions.
final class Tmux {
    let socket = "dubfarm-test-\(UUID().uuidString.prefix(8))"
    static var available: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/tmux") }

    @discardableResult
    func callAsFunction(_ args: String...) throws -> String {
        let r = try ProcessControl.run("/usr/bin/tmux", ["-L", socket, "-f", "/dev/null"] + args, timeout: 30)
        guard r.status == 0 else { throw TestTimeout(description: "tmux \(args.joined(separator: " ")): \(r.stderr)") }
        return r.stdout
    }

    func kill() { _ = try? ProcessControl.run("/usr/bin/tmux", ["-L", socket, "kill-server"], timeout: 10) }
}

/// A farm running one long job: `speaker-long.mp4` (3 segments) on the sleep stage, with a quick
/// worker `w1` (3 s per segment) and a slow one `w2` (120 s), so that two segments finish and the
/// job then stays `running` at 2/3 for as long as a test needs. Returns the job's progress in
/// percent as `dubfarm jobs` reports it (which 2 segments finished decides it).
func farmWithRunningJob() async throws -> (TestFarm, Int64, Int) {
    let farm = try await TestFarm()
    do {
        try farm.startCoordinator()
        try farm.startWorker("w1", stage: "sleep", extra: ["--sleep-seconds", "3"])
        // The sleep stage spreads its time over the segment's frames: w2 takes minutes per frame,
        // so the job's progress stands still while the views are compared.
        try farm.startWorker("w2", stage: "sleep", extra: ["--sleep-seconds", "100000"])
        try farm.waitForWorkers(2, "2 workers connected", timeout: 30)
        let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
        try farm.waitFor("2 of 3 segments done and w2 busy", timeout: 120) {
            let d = try farm.status(job)
            return d.job.segments.done == 2 && d.segments.contains { $0.state == .leased && $0.worker == "w2" }
        }
        let view = try #require(try farm.client().call(.jobs(JobsQuery(state: nil, limit: 10)), as: [JobView].self).first { $0.id == job })
        return (farm, job, Int(view.progress * 100))
    } catch {
        farm.shutdown()
        throw error
    }
}

extension Integration {
    @Suite("Monitoring", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct MonitoringTests {
        @Test("/metrics parses as Prometheus text exposition and its counts match the database")
        func metrics() async throws {
            let farm = try await TestFarm.start(workers: 2)
            defer { farm.shutdown() }
            try farm.startWorker("f1", stage: "fail")
            let good = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"))
            let done = try farm.wait(job: good)
            #expect(done.job.state == .done, "\(done.job.error ?? "")")
            let bad = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), stage: "fail")
            #expect(try farm.wait(job: bad).job.state == .failed)
            // Let the failed job's last in-flight reports settle: every segment is final.
            try farm.waitFor("no leased segments", timeout: 30) { try farm.status(bad).segments.allSatisfy { $0.state != .leased } }

            // Gauges by state equal the database, read independently. Worker states reach the
            // database on the coordinator's next tick: wait until they have settled.
            let store = farm.db.store()
            try await store.connect(retryFor: 10)
            let settle = Date().addingTimeInterval(30)
            while try await store.workers().contains(where: { $0.state != .idle }) {
                guard Date() < settle else { throw TestTimeout(description: "workers never idle in the database") }
                try await Task.sleep(for: .milliseconds(100))
            }
            let p = try PrometheusText(try httpGet(farm.metricsURL + "/metrics"))
            let jobs = try await store.jobs(limit: 1000)
            for state in JobState.allCases {
                #expect(p.value("dubfarm_jobs", ["state": state.rawValue]) == Double(jobs.filter { $0.state == state }.count), "jobs \(state)")
            }
            var segments: [SegmentState: Int] = [:]
            var failures = 0
            for j in jobs {
                for s in try await store.segments(job: j.id) {
                    segments[s.state, default: 0] += 1
                    failures += s.failures
                }
            }
            for state in SegmentState.allCases {
                #expect(p.value("dubfarm_segments", ["state": state.rawValue]) == Double(segments[state] ?? 0), "segments \(state)")
            }
            #expect(p.value("dubfarm_queue_depth") == Double(segments[.pending] ?? 0))
            let workers = try await store.workers()
            for state in Set(workers.map(\.state.rawValue)).union(["idle", "busy"]) {
                #expect(p.value("dubfarm_workers", ["state": state]) == Double(workers.filter { $0.state.rawValue == state }.count), "workers \(state)")
            }
            await store.close()

            // Counters from the coordinator's events match what the database recorded.
            let doneSegments = Double(segments[.done] ?? 0)
            #expect(doneSegments == 3)
            #expect(p.value("dubfarm_segments_completed_total") == doneSegments)
            #expect(p.value("dubfarm_segment_processing_seconds_count") == doneSegments)
            #expect(p.value("dubfarm_frames_processed_total") == Double(done.job.frames ?? -1))
            #expect(p.series("dubfarm_segment_failures_total").reduce(0) { $0 + $1.value } == Double(failures))
            #expect(failures >= 3)
            #expect(p.value("dubfarm_stitch_output_bytes_total") == Double(done.job.outputBytes ?? -1))
            #expect(p.value("dubfarm_jobs_stitched_total") == 1)
            let uploaded = try ["speaker-long.mp4", "dub-long.wav", "speaker-c.mp4", "dub-1.wav"].reduce(0) {
                $0 + ((try FileManager.default.attributesOfItem(atPath: media($1))[.size] as? Int) ?? 0)
            }
            #expect(p.value("dubfarm_upload_bytes_total") == Double(uploaded))
            #expect((p.value("dubfarm_dispatch_latency_seconds_count") ?? 0) >= 1)
            #expect(p.types["dubfarm_segment_processing_seconds"] == "histogram")

            // Every read command speaks JSON (schemas in docs/json-output.md).
            let ep = farm.controlEndpoint
            let logs = try dubfarm(["logs", "\(good)", "--json", "--coordinator", ep], timeout: 60)
            let events = try logs.out.split(separator: "\n").map { try JSONDecoder.iso.decode(EventView.self, from: Data($0.utf8)) }
            #expect(events.contains { $0.kind == "job" } && events.contains { $0.segment != nil }, "one event per line: \(logs.out.prefix(500))")
            let status = try JSONDecoder.iso.decode(JobDetail.self, from: Data(try dubfarm(["status", "\(good)", "--json", "--coordinator", ep]).out.utf8))
            #expect(status.job.framesDone == done.job.frames)
            let ws = try JSONDecoder.iso.decode([WorkerView].self, from: Data(try dubfarm(["workers", "--json", "--coordinator", ep]).out.utf8))
            #expect(Set(ws.map(\.name)) == ["w1", "w2", "f1"])
            let config = try dubfarm(["config", "check", "--json"], environment: ["DUBFARM_METRICS_LISTEN": "127.0.0.1:9999"])
            struct Settings: Decodable { struct S: Decodable { var key, value, source, environment: String }; var settings: [S] }
            let settings = try JSONDecoder().decode(Settings.self, from: Data(config.out.utf8)).settings
            #expect(settings.contains { $0.key == "metrics.listen" && $0.value == "127.0.0.1:9999" && $0.source == "environment" })
        }

        @Test("the dashboard in headless Chromium shows the running job with its progress and both workers",
              .enabled(if: Chromium.canRenderLive, "needs Debian's chromium (tools/install-deps.sh) and the .venv's websockets (make py-deps)"))
        func dashboard() async throws {
            let (farm, job, pct) = try await farmWithRunningJob()
            defer { farm.shutdown() }
            // The JSON the page renders: the same views as `dubfarm jobs` and `workers`.
            let api = try JSONDecoder.iso.decode(FarmSnapshot.self, from: Data(try httpGet(farm.metricsURL + "/api/farm").utf8))
            let cli = try farm.client().call(.jobs(JobsQuery(state: nil, limit: 50)), as: [JobView].self)
            #expect(api.jobs.map(\.id) == cli.map(\.id))
            #expect(api.jobs.first?.segments == cli.first?.segments)
            #expect(api.workers.map(\.name) == ["w1", "w2"])

            let shot = testArtifacts.appendingPathComponent("dashboard.png")
            let dom = try Chromium.renderLive(farm.metricsURL + "/", screenshot: shot)
            try dom.write(to: testArtifacts.appendingPathComponent("dashboard.html"), atomically: true, encoding: .utf8)
            let row = try #require(Self.element(in: dom, tag: "tr", attribute: "data-job=\"\(job)\""), "no row for job \(job) in:\n\(dom.prefix(3000))")
            #expect(row.contains("data-state=\"running\""))
            #expect(row.contains("aria-valuenow=\"\(pct)\""), "progress: \(row)")
            #expect(row.contains(">\(pct)%<"))
            #expect(row.contains(">2/3<"))
            #expect(row.contains("speaker-long.mp4"))
            let w1 = try #require(Self.element(in: dom, tag: "tr", attribute: "data-worker=\"w1\""))
            let w2 = try #require(Self.element(in: dom, tag: "tr", attribute: "data-worker=\"w2\""))
            #expect(w1.contains("data-state=\"idle\""))
            #expect(w2.contains("data-state=\"busy\"") && w2.contains(">\(job)/"))
            #expect(dom.contains("jobs running <b>1</b>"), "the queue shows one running job")
            #expect(dom.contains("data-event="), "recent events are listed")

            let phone = testArtifacts.appendingPathComponent("dashboard-phone.png")
            _ = try Chromium.renderLive(farm.metricsURL + "/", screenshot: phone, width: 390, height: 844)
            print("dashboard screenshots: \(shot.path) \(phone.path)")
        }

        @Test("top in a real terminal (tmux) shows the running job's progress and both workers, follows resizes, q quits cleanly",
              .enabled(if: Tmux.available, "needs tmux (tools/install-deps.sh)"))
        func top() async throws {
            let (farm, job, pct) = try await farmWithRunningJob()
            defer { farm.shutdown() }
            let tmux = Tmux()
            defer { tmux.kill() }
            try tmux("new-session", "-d", "-s", "top", "-x", "120", "-y", "30",
                     "env TERM=xterm-256color \(dubfarmExecutable) top --coordinator \(farm.controlEndpoint); echo top-exited-$?")
            try tmux("set-option", "-t", "top", "remain-on-exit", "on")
            var screen = ""
            try farm.waitFor("top to show the job and both workers", timeout: 60) {
                screen = try tmux("capture-pane", "-p", "-t", "top")
                return screen.contains("running") && screen.contains("w1") && screen.contains("w2") && screen.contains("q quit")
                    && screen.split(separator: "\n").contains { $0.hasPrefix(rowPrefix(job)) }
            }
            let row = try #require(screen.split(separator: "\n").first { $0.hasPrefix(rowPrefix(job)) })
            #expect(row.contains("running") && row.contains("2/3") && row.contains(" \(pct)%") && row.contains("█"), "\(row)")
            let w2 = try #require(screen.split(separator: "\n").first { $0.hasPrefix("w2") })
            #expect(w2.contains("busy") && w2.contains("\(job)/"), "\(w2)")
            #expect(screen.split(separator: "\n").allSatisfy { $0.count <= 120 })
            try Self.saveTopCapture(tmux, name: "top")

            // The f key filters by state: queued shows no running job.
            try tmux("send-keys", "-t", "top", "f")
            try farm.waitFor("the queued filter", timeout: 20) {
                screen = try tmux("capture-pane", "-p", "-t", "top")
                return screen.contains("filter (queued)")
            }
            #expect(!screen.split(separator: "\n").contains { $0.hasPrefix(rowPrefix(job)) })
            try tmux("send-keys", "-t", "top", "a")

            // Resizing the terminal re-lays the view out to the new size.
            try tmux("resize-window", "-t", "top", "-x", "72", "-y", "18")
            try farm.waitFor("top redrawn at 72x18", timeout: 20) {
                screen = try tmux("capture-pane", "-p", "-t", "top")
                let lines = screen.split(separator: "\n", omittingEmptySubsequences: false)
                return lines.contains { $0.hasPrefix("q quit") && $0.contains("(all)") } && lines.contains { $0.count >= 71 && $0.count <= 72 }
            }
            #expect(screen.split(separator: "\n").allSatisfy { $0.count <= 72 })

            // q quits: the process exits 0 and the terminal's normal screen is back.
            try tmux("send-keys", "-t", "top", "q")
            var dead = ""
            try farm.waitFor("top to exit", timeout: 20) {
                dead = try tmux("display-message", "-p", "-t", "top", "#{pane_dead} #{pane_dead_status}").trimmingCharacters(in: .whitespacesAndNewlines)
                return dead.hasPrefix("1")
            }
            let after = try tmux("capture-pane", "-p", "-t", "top")
            #expect(after.contains("top-exited-0"), "top's exit status:\n\(after)")
            #expect(!after.contains("q quit"), "the alternate screen was left:\n\(after)")

            // Not a terminal: plain lines, and --json lines.
            let plain = try dubfarm(["top", "--coordinator", farm.controlEndpoint, "--count", "2", "--interval", "0.5"], timeout: 60)
            #expect(plain.status == 0)
            #expect(plain.out.contains("job \(job) running \(pct)% segments 2/3"), "\(plain.out)")
            #expect(plain.out.contains("worker w2 ") && plain.out.contains("worker w1 "))
            let json = try dubfarm(["top", "--coordinator", farm.controlEndpoint, "--count", "1", "--json"], timeout: 60)
            let snap = try JSONDecoder.iso.decode(FarmSnapshot.self, from: Data(json.out.utf8))
            #expect(snap.jobs.first { $0.id == job }?.state == .running)
        }

        /// The first element `<tag …attribute…>…</tag>` in `html` (no nesting of the same tag).
        static func element(in html: String, tag: String, attribute: String) -> String? {
            guard let a = html.range(of: "<\(tag) [^>]*\(NSRegularExpression.escapedPattern(for: attribute))", options: .regularExpression),
                  let b = html.range(of: "</\(tag)>", range: a.upperBound..<html.endIndex) else { return nil }
            return String(html[a.lowerBound..<b.upperBound])
        }

        /// Saves the pane with its colours as text and as HTML (and a PNG when Chromium is there).
        static func saveTopCapture(_ tmux: Tmux, name: String) throws {
            let plain = try tmux("capture-pane", "-p", "-t", "top")
            try plain.write(to: testArtifacts.appendingPathComponent("\(name).txt"), atomically: true, encoding: .utf8)
            let ansi = try tmux("capture-pane", "-p", "-e", "-t", "top")
            let html = testArtifacts.appendingPathComponent("\(name).html")
            try ANSIToHTML.page(ansi).write(to: html, atomically: true, encoding: .utf8)
            if Chromium.available {
                try? Chromium.screenshot("file://" + html.path, to: testArtifacts.appendingPathComponent("\(name).png"), width: 1000, height: 560, budget: 500)
            }
            print("top capture: \(testArtifacts.appendingPathComponent("\(name).txt").path)")
        }
    }
}

/// How `top` starts a job's row: the id right-aligned in 6 columns.
func rowPrefix(_ job: Int64) -> String { String(repeating: " ", count: max(0, 6 - "\(job)".count)) + "\(job)" }


/// Renders a tmux capture with SGR escapes (reverse video, bold, colours ignored) as an HTML page.
enum ANSIToHTML {
    static func page(_ ansi: String) -> String {
        var body = ""
        var reverse = false, bold = false, open = false
        var i = ansi.startIndex
        func esc(_ c: Character) -> String { c == "<" ? "&lt;" : c == ">" ? "&gt;" : c == "&" ? "&amp;" : String(c) }
        while i < ansi.endIndex {
            if ansi[i] == "\u{1B}", let m = ansi[i...].range(of: "^\u{1B}\\[[0-9;]*m", options: .regularExpression) {
                let codes = ansi[m].dropFirst(2).dropLast().split(separator: ";").map { Int($0) ?? 0 }
                for c in codes.isEmpty ? [0] : codes {
                    switch c {
                    case 0: reverse = false; bold = false
                    case 1: bold = true
                    case 7: reverse = true
                    case 22: bold = false
                    case 27: reverse = false
                    default: break
                    }
                }
                if open { body += "</span>" }
                body += "<span class=\"\(reverse ? "rev" : "")\(bold ? " b" : "")\">"
                open = true
                i = m.upperBound
                continue
            }
            body += esc(ansi[i])
            i = ansi.index(after: i)
        }
        if open { body += "</span>" }
        return """
            <!doctype html><meta charset="utf-8"><style>
            body{margin:0;background:#101418;color:#d8dee6}
            pre{margin:12px;font:14px/1.25 "DejaVu Sans Mono",monospace}
            .rev{background:#d8dee6;color:#101418}.b{font-weight:bold}
            </style><pre>\(body)</pre>
            """
    }
}
