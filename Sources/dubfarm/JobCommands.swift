import ArgumentParser
import DubfarmCore
import FarmClient
import FarmProtocol
import Foundation

/// Frames per second over the last few seconds.
struct RateEstimator {
    var samples: [(Date, Int)] = []
    mutating func add(frames: Int) {
        samples.append((Date(), frames))
        samples.removeAll { Date().timeIntervalSince($0.0) > 10 }
    }
    var fps: Double? {
        guard let a = samples.first, let b = samples.last, b.0.timeIntervalSince(a.0) > 0.9, b.1 > a.1 else { return nil }
        return Double(b.1 - a.1) / b.0.timeIntervalSince(a.0)
    }
}

func formatDuration(_ s: Double) -> String {
    guard s.isFinite, s >= 0 else { return "--" }
    let t = Int(s.rounded())
    return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
}

func printProgressLine(_ label: String, _ fraction: Double, _ text: String) {
    let width = 30
    let f = max(0, min(1, fraction))
    let filled = Int(f * Double(width))
    let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
    print("\r\u{1B}[2K\(label) \(bar) \(String(format: "%3d%%", Int(f * 100)))  \(text)", terminator: "")
    fflush(nil)
}

final class UploadProgress {
    let quiet: Bool
    var shown = false
    init(quiet: Bool) { self.quiet = quiet }
    func show(_ path: String, _ done: Int64, _ total: Int64) {
        guard !quiet, stdoutIsTerminal else { return }
        shown = true
        printProgressLine("uploading \(URL(fileURLWithPath: path).lastPathComponent)", Double(done) / Double(max(total, 1)),
                          "\(done / 1024) / \(total / 1024) KiB")
    }
    func done() { if shown { print("") } }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a job and its segments.")
    @Argument(help: "The job id.") var job: Int64
    @OptionGroup var client: ClientOptions

    func run() throws {
        let d = try client.client().call(.status(job: job), as: JobDetail.self)
        if client.json { return try printJSON(d) }
        let j = d.job
        print("job \(j.id)  \(j.state)  priority \(j.priority)  stage \(j.stage)" + (j.model.map { "  model \($0)" } ?? ""))
        if let n = j.name { print("  name    \(n)") }
        if let l = j.labels, !l.isEmpty { print("  labels  \(JobLabels.format(l))") }
        print("  video   \(j.video)" + (j.frames.map { "  (\($0) frames at \(j.frameRate ?? "?") fps, \(j.width ?? 0)x\(j.height ?? 0))" } ?? ""))
        print("  audio   \(j.audio)" + (j.audioFit.map { "  (\($0))" } ?? ""))
        if let f = j.face { print("  face    \(f)") }
        print("  progress \(Int(j.progress * 100))%  segments \(j.segments.done)/\(j.segments.total) done, \(j.segments.leased) running, \(j.segments.pending) pending" + (j.segments.dead > 0 ? ", \(j.segments.dead) dead" : ""))
        if let w = j.waitingFor { print("  waiting \(w)") }
        if let p = j.personalisation {
            print("  personalise  \(p.summary)")
            if p.state != "done" {
                print("               budget \(p.budgetSeconds) s, \(Int(p.elapsedSeconds)) s spent, attempt \(max(p.leases, 1))"
                      + (p.failures > 0 ? ", \(p.failures) failed" : "") + (p.checkpointStep.map { ", checkpoint at step \($0)" } ?? "")
                      + (p.datasetFrames.map { ", \($0) frames" } ?? "") + (p.fallback ? ", default weights if it fails" : "")
                      + ((p.workers ?? 1) > 1 ? ", up to \(p.workers!) workers" : ""))
            }
            if let r = p.report.flatMap(PersonaliseReport.init(json:)) { print("               held-back frames: \(r.summary)") }
        }
        if let w = j.weights { print("  weights \(w) (personalised)") }
        if let e = j.error { print("  error   \(e)") }
        if let removed = j.mediaRemovedAt {
            print("  files   removed by gc on \(ISO8601DateFormatter().string(from: removed)) (nothing to fetch)")
        } else if let b = j.outputBytes { print("  output  \(b) bytes (dubfarm fetch \(j.id) --out FILE)") }
        guard !d.segments.isEmpty else { return }
        var rows = [["SEG", "FRAMES", "STATE", "WORKER", "DONE", "TRIES", "SECONDS", "FACES", "SWAPPED", "NOTE"]]
        for s in d.segments {
            rows.append(["\(s.index)", "\(s.startFrame)-\(s.endFrame - 1)", s.state.rawValue, s.worker ?? "",
                         "\(s.framesDone)/\(s.endFrame - s.startFrame)", "\(s.leases)", s.processSeconds.map { String(format: "%.1f", $0) } ?? "",
                         s.stats.map { "\($0.framesWithFace)/\($0.frames)" } ?? "", s.stats.map { "\($0.framesSwapped)" } ?? "",
                         s.error ?? ""])
        }
        printTable(rows)
        let timed = d.segments.compactMap { s in s.stats?.steps.map { (s.index, $0) } }
        if !timed.isEmpty {
            print("  stage milliseconds per frame:")
            for (index, steps) in timed {
                print("    seg \(index): " + steps.map { "\($0.step) \(String(format: "%.1f", $0.msPerFrame))" }.joined(separator: ", "))
            }
        }
    }
}

struct Jobs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List jobs, newest first.",
        discussion: "Examples: dubfarm jobs --label show=pilot · dubfarm jobs --state running --watch")
    @Option(name: .long, help: "Only jobs in this state: \(JobState.allCases.map(\.rawValue).joined(separator: ", ")).")
    var state: String?
    @Option(name: .customLong("label"), help: ArgumentHelp("Only jobs with this label (repeat: all of them).", valueName: "KEY=VALUE"))
    var labels: [String] = []
    @Option(name: .long, help: "Only jobs with this name.") var name: String?
    @Option(name: .long, help: "At most this many.") var limit: Int = 50
    @Flag(name: .long, help: "Keep the list on screen, redrawn every second, until Ctrl-C (off a terminal: print it again whenever it changes).")
    var watch = false
    @OptionGroup var client: ClientOptions

    func run() throws {
        var s: JobState?
        if let state {
            guard let parsed = JobState(rawValue: state) else {
                throw ValidationError("unknown state '\(state)': \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            s = parsed
        }
        let selector: [String: String]
        do { selector = try JobLabels.parse(labels) } catch let e as DubfarmError { throw ValidationError("--label: \(e.message)") }
        let query = JobsQuery(state: s, limit: limit, labels: selector.isEmpty ? nil : selector, name: name)
        guard watch else {
            let jobs = try client.client().call(.jobs(query), as: [JobView].self)
            if client.json { return try printJSON(jobs) }
            return printTable(Self.rows(jobs))
        }
        let session = try client.reconnectingClient(patience: nil)
        var last = ""
        while true {
            let jobs = try session.resilient { try $0.call(.jobs(query), as: [JobView].self) }
            if client.json {
                try printJSONLine(jobs)
            } else {
                let table = Self.rows(jobs).map { $0.joined(separator: "\u{1}") }.joined(separator: "\n")
                if stdoutIsTerminal {
                    // Home and clear, then the table: a screen that stays put.
                    print("\u{1B}[H\u{1B}[2J" + "dubfarm jobs — \(Self.clock.string(from: Date()))  (Ctrl-C to stop)\n")
                    printTable(Self.rows(jobs))
                } else if table != last {
                    print("--- \(Self.clock.string(from: Date()))")
                    printTable(Self.rows(jobs))
                }
                last = table
            }
            fflush(nil)
            Thread.sleep(forTimeInterval: 1)
        }
    }

    static let clock: DateFormatter = {
        let df = DateFormatter()
        df.dateFormat = "HH:mm:ss"
        return df
    }()

    static func rows(_ jobs: [JobView]) -> [[String]] {
        var rows = [["JOB", "STATE", "PRI", "PROGRESS", "SEGMENTS", "NAME", "VIDEO", "LABELS", "CREATED", "NOTE"]]
        let df = DateFormatter()
        df.dateFormat = "yyyy-MM-dd HH:mm:ss"
        for j in jobs {
            rows.append(["\(j.id)", j.state.rawValue, "\(j.priority)", "\(Int(j.progress * 100))%",
                         "\(j.segments.done)/\(j.segments.total)", j.name ?? "", j.video, JobLabels.format(j.labels ?? [:]),
                         df.string(from: j.createdAt), j.waitingFor ?? (j.mediaRemovedAt != nil ? "files removed by gc" : "")])
        }
        return rows
    }
}

struct Workers: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the workers connected to the coordinator.")
    @OptionGroup var client: ClientOptions

    func run() throws {
        let ws = try client.client().call(.workers, as: [WorkerView].self)
        if client.json { return try printJSON(ws) }
        var rows = [["WORKER", "HOST", "STATE", "STAGE", "MODEL", "THREADS", "SEGMENT", "SEGMENTS", "FRAMES", "LAST SEEN"]]
        for w in ws {
            rows.append([w.name, w.host, w.state, w.stage, w.model ?? "", "\(w.threads)", w.current ?? "", "\(w.segmentsDone)", "\(w.framesDone)",
                         String(format: "%.1fs ago", Date().timeIntervalSince(w.lastSeen))])
        }
        printTable(rows)
    }
}

struct Logs: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a job's event history: every state change, worker and reason.")
    @Argument(help: "The job id.") var job: Int64
    @Flag(name: .shortAndLong, help: "Keep printing new events until the job ends.") var follow = false
    @OptionGroup var client: ClientOptions

    func run() throws {
        let c = try client.client()
        var after: Int64 = 0
        let df = ISO8601DateFormatter()
        df.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let page = 1000
        while true {
            let events = try c.call(.events(EventsQuery(job: job, after: after, limit: page)), as: [EventView].self)
            for e in events {
                if client.json { try printJSONLine(e) } else {
                    let subject = e.segment.map { "segment \($0)" } ?? e.kind
                    let change = [e.from, e.to].compactMap { $0 }.joined(separator: " → ")
                    print("\(df.string(from: e.at))  \(subject.padding(toLength: 11, withPad: " ", startingAt: 0)) \(change.padding(toLength: 22, withPad: " ", startingAt: 0)) \(e.worker.map { "[\($0)] " } ?? "")\(e.reason)")
                }
                after = max(after, e.id)
            }
            fflush(nil)
            // A full page: more events are waiting (a long job has thousands); fetch them now.
            if events.count == page { continue }
            guard follow else { return }
            let j = try c.call(.status(job: job), as: JobDetail.self).job
            if j.state.isTerminal && events.isEmpty { return }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }
}

struct Cancel: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel jobs; their running segments stop and workers are freed.",
        discussion: "Examples: dubfarm cancel 12 · dubfarm cancel --label show=pilot (finished jobs are left as they are)")
    @OptionGroup var selection: JobSelection
    @OptionGroup var client: ClientOptions
    func run() throws {
        let c = try client.client()
        let jobs = try selection.resolve(c)
        var out: [JobView] = []
        for j in jobs {
            if j.state.isTerminal && !selection.jobs.contains(j.id) { continue }
            out.append(try c.call(.cancel(job: j.id), as: JobView.self))
        }
        if client.json { return try selection.jobs.count == 1 && out.count == 1 && selection.labels.isEmpty && selection.name == nil ? printJSON(out[0]) : printJSON(out) }
        for j in out { print("job \(j.id) \(j.state)") }
        if out.isEmpty { print("no unfinished job to cancel among \(jobs.count)") }
    }
}

struct Retry: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Retry failed or cancelled jobs; finished segments are kept.",
        discussion: "Examples: dubfarm retry 12 · dubfarm retry --label show=pilot (only the failed and cancelled ones)")
    @OptionGroup var selection: JobSelection
    @OptionGroup var client: ClientOptions
    func run() throws {
        let c = try client.client()
        let jobs = try selection.resolve(c)
        var out: [JobView] = []
        for j in jobs {
            if !(j.state == .failed || j.state == .cancelled) && !selection.jobs.contains(j.id) { continue }
            out.append(try c.call(.retry(job: j.id), as: JobView.self))
        }
        if client.json { return try selection.jobs.count == 1 && out.count == 1 && selection.labels.isEmpty && selection.name == nil ? printJSON(out[0]) : printJSON(out) }
        for j in out { print("job \(j.id) \(j.state)") }
        if out.isEmpty { print("no failed or cancelled job to retry among \(jobs.count)") }
    }
}

struct Fetch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download finished jobs' outputs.",
        discussion: """
            With --all (and --label or --name) every finished job selected is downloaded, to an             --out pattern: {job}, {stem} (the video's name without extension), {audio}, {lang}             (the job's lang label), {name}.

            Examples:
              dubfarm fetch 12 --out talk-es.mp4
              dubfarm fetch --all --label show=pilot --out 'out/{stem}.{lang}.mp4'
            """)
    @OptionGroup var selection: JobSelection
    @Flag(name: .long, help: "Every done job selected (with --label or --name); others are skipped.") var all = false
    @Option(name: .long, help: ArgumentHelp("Where to write the MP4 (a pattern with several jobs).", valueName: "PATH")) var out: String
    @OptionGroup var client: ClientOptions

    func validate() throws {
        if !all && (selection.jobs.count != 1 || !selection.labels.isEmpty || selection.name != nil) {
            throw ValidationError("fetch takes one JOB id; for several, use --all with --label or --name (or JOB ids) and an --out pattern")
        }
    }

    func run() throws {
        let c = try client.client()
        if !all {
            let job = selection.jobs[0]
            let target: String
            if try OutputPattern(out).isConstant {
                // A fixed path is checked before the coordinator is asked anything.
                target = try OutputPattern(out).expand(video: "", audio: "", lang: nil, name: nil, index: 1, job: job)
                try checkWritableOutput(target)
            } else {
                let view = try c.call(.status(job: job), as: JobDetail.self).job
                target = try outputPaths(out, for: [view])[0]!
            }
            try download(c, job: job, to: target)
            if client.json { try printJSON(["job": "\(job)", "out": target]) } else { print("output: \(target)") }
            return
        }
        let jobs = try selection.resolve(c, states: [.done]).filter { $0.mediaRemovedAt == nil }
        guard !jobs.isEmpty else { throw DubfarmError(.notFound, "none of the selected jobs is done with its output kept") }
        let paths = try outputPaths(out, for: jobs)
        var written: [[String: String]] = []
        for (j, path) in zip(jobs, paths) {
            try download(c, job: j.id, to: path!)
            written.append(["job": "\(j.id)", "out": path!])
            if !client.json { print("output: \(path!)  (job \(j.id))") }
        }
        if client.json { try printJSON(written) }
    }

    func download(_ c: ControlClient, job: Int64, to path: String) throws {
        try c.download(job: job, to: path) { done, total in
            if !client.json && stdoutIsTerminal { printProgressLine("downloading \(job)", Double(done) / Double(max(total, 1)), "") }
        }
        if !client.json && stdoutIsTerminal { print("") }
    }
}

/// Prints rows as aligned columns (first row is the header).
func printTable(_ rows: [[String]]) {
    guard let header = rows.first else { return }
    var widths = header.map(\.count)
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    for r in rows {
        print(r.enumerated().map { i, c in i == r.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  "))
    }
}

/// The trainer's figures on the held-back part of a personalised job's clip (its `done` line).
struct PersonaliseReport: Decodable {
    struct Holdout: Decodable {
        var psnr_before: Double?
        var psnr_after: Double?
    }
    var holdout: Holdout?

    init?(json: String) {
        guard let r = try? JSONDecoder().decode(PersonaliseReport.self, from: Data(json.utf8)) else { return nil }
        self = r
    }

    var summary: String {
        guard let b = holdout?.psnr_before, let a = holdout?.psnr_after else { return "no figures reported" }
        return String(format: "face PSNR %.2f dB before, %.2f dB after (%+.2f dB)", b, a, a - b)
    }
}
