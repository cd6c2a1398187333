import DubfarmCore
import FarmClient
import FarmProtocol
import FarmTestSupport
import Foundation
import LocalFarm
import MediaPipeline
import Synchronization
import Testing

/// A `dubfarm` command run on a thread of its own while the test goes on (killing and
/// restarting the coordinator under it); `join` waits for its outcome.
final class BackgroundCommand: @unchecked Sendable {
    private let outcome = Mutex<Result<ProcessControl.Outcome, any Error>?>(nil)
    private let finished = DispatchSemaphore(value: 0)

    init(_ args: [String], environment: [String: String] = [:], timeout: Double) {
        var env = ProcessInfo.processInfo.environment
        env["DUBFARM_COORDINATOR"] = nil
        for (k, v) in environment { env[k] = v }
        let thread = Thread { [self, env] in
            let r = Result { try ProcessControl.run(dubfarmExecutable, args, environment: env, timeout: timeout) }
            outcome.withLock { $0 = r }
            finished.signal()
        }
        thread.start()
    }

    func join(timeout: Double) throws -> ProcessControl.Outcome {
        guard finished.wait(timeout: .now() + timeout) == .success, let r = outcome.withLock({ $0 }) else {
            throw TestTimeout(description: "the background dubfarm command did not finish within \(timeout) s")
        }
        return try r.get()
    }
}

/// Ten distinct dub tracks named talk.LANG.wav (dub-1.wav at ten volumes), in `dir`.
func tenTracks(in dir: URL) throws -> [URL] {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let langs = ["es", "de", "fr", "it", "pt", "nl", "sv", "pl", "ja", "ko"]
    return try langs.enumerated().map { i, lang in
        let url = dir.appendingPathComponent("talk.\(lang).wav")
        let r = try ProcessControl.run("/usr/bin/ffmpeg", ["-loglevel", "error", "-y", "-i", media("dub-1.wav"),
                                                           "-af", "volume=0.\(90 + i)", url.path], timeout: 60)
        guard r.status == 0 else { throw TestTimeout(description: "ffmpeg: \(r.stderr)") }
        return url
    }
}

func fileSize(_ path: String) -> Int64 {
    (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? -1
}

extension Integration {
    @Suite("Dubbing workflow: many tracks, manifests, labels, waiting, gc", .serialized)
    struct WorkflowTests {
        @Test("ten tracks for one video: the video crosses the wire once, ten frame-exact outputs named by the pattern",
              .enabled(if: haveMedia))
        func tenLanguages() async throws {
            let farm = try await TestFarm.start(workers: 2)
            defer { farm.shutdown() }
            let dubs = try tenTracks(in: farm.dir.appendingPathComponent("dubs"))
            let out = farm.dir.appendingPathComponent("out")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            let video = media("speaker-b.mp4")
            let r = try dubfarm(["submit", video, "--audio-dir", farm.dir.appendingPathComponent("dubs").path, "--label", "show=pilot",
                                 "--name", "pilot", "--out", out.path + "/{stem}.{lang}.mp4", "--coordinator", farm.controlEndpoint],
                                timeout: 600)
            #expect(r.status == 0, "\(r.out)\n\(r.err)")

            // Bytes on the wire: the video once and each track once.
            let sent = Double(fileSize(video) + dubs.map { fileSize($0.path) }.reduce(0, +))
            let metrics = try PrometheusText(try httpGet(farm.metricsURL + "/metrics"))
            #expect(metrics.value("dubfarm_upload_bytes_total") == sent)

            let source = try #require(try MediaProbe.probe(path: video).video)
            for lang in ["es", "de", "fr", "it", "pt", "nl", "sv", "pl", "ja", "ko"] {
                let file = out.appendingPathComponent("speaker-b.\(lang).mp4").path
                let info = try MediaProbe.probe(path: file)
                #expect(info.video?.frameCount == source.frameCount, "\(lang)")
                #expect(info.audio != nil, "\(lang)")
            }
            // One plan of the video: the first job indexed it, the nine others reused that.
            let plans = try FileManager.default.contentsOfDirectory(atPath: farm.store.root.appendingPathComponent("plans").path)
            let videoSHA = sha256Hex(Array(try Data(contentsOf: URL(fileURLWithPath: video))))
            #expect(plans.count == 1 && plans[0].hasPrefix(videoSHA), "\(plans)")
            #expect(farm.tail("coordinator", lines: 2000).components(separatedBy: "reusing the plan of the same video").count - 1 == 9)
            let jobs = try farm.client().call(.jobs(JobsQuery(labels: ["show": "pilot"])), as: [JobView].self)
            #expect(jobs.count == 10)
            #expect(Set(jobs.compactMap { $0.labels?["lang"] }).count == 10)
            #expect(jobs.allSatisfy { $0.name?.hasPrefix("pilot (") == true && $0.state == .done })

            // The same video and a track the farm has: nothing is sent again.
            let again = try dubfarm(["submit", video, "--audio", dubs[0].path, "--coordinator", farm.controlEndpoint])
            #expect(again.status == 0, "\(again.err)")
            let after = try PrometheusText(try httpGet(farm.metricsURL + "/metrics"))
            #expect(after.value("dubfarm_upload_bytes_total") == sent)
            #expect(after.value("dubfarm_upload_reused_bytes_total") == Double(fileSize(video) + fileSize(dubs[0].path)))
        }

        @Test("an upload cut off half-way goes on from where it stopped")
        func resumedUpload() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            let file = farm.dir.appendingPathComponent("big.bin")
            let bytes = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }
            try Data(bytes).write(to: file)
            let sha = sha256Hex(bytes)
            // A client that sends the first MiB and goes away.
            let first = try farm.client()
            let started = try first.call(.uploadBegin(UploadBegin(name: "big.bin", size: Int64(bytes.count), sha256: sha)), as: UploadStarted.self)
            #expect(started.received == 0)
            _ = try first.call(.uploadChunk(id: started.id, offset: 0, data: Array(bytes[0..<(1 << 20)])), as: UploadStatus.self)
            // The next one is told to go on at 1 MiB and sends only the rest.
            let second = try farm.client()
            let id = try second.upload(path: file.path)
            #expect(id == sha)
            #expect(second.uploadBytesSent == Int64(bytes.count - (1 << 20)))
            let third = try farm.client()
            _ = try third.upload(path: file.path)
            #expect(third.uploadBytesSent == 0, "the farm has the file")
        }

        @Test("a manifest with two bad rows is refused whole, naming both; a good one queues every job", .enabled(if: haveMedia))
        func manifests() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            let dir = farm.dir
            let bad = dir.appendingPathComponent("bad.csv")
            try """
                video,audio,labels,priority
                \(media("speaker-b.mp4")),\(media("dub-1.wav")),show=s1;lang=es,1
                \(media("speaker-b.mp4")),missing-track.wav,show=s1,1
                \(media("speaker-c.mp4")),\(media("dub-2.wav")),show=s1,2
                \(media("speaker-c.mp4")),\(media("dub-2.wav")),Bad Key=x,high
                """.write(to: bad, atomically: true, encoding: .utf8)
            let refused = try dubfarm(["submit", "--manifest", bad.path, "--coordinator", farm.controlEndpoint])
            #expect(refused.status == 2, "\(refused.out)\(refused.err)")
            #expect(refused.err.contains("nothing was submitted"), "\(refused.err)")
            #expect(refused.err.contains("row 3:") && refused.err.contains("missing-track.wav"), "\(refused.err)")
            #expect(refused.err.contains("row 5:"), "\(refused.err)")
            #expect(!refused.err.contains("row 2:") && !refused.err.contains("row 4:"), "\(refused.err)")
            #expect(try farm.client().call(.jobs(JobsQuery()), as: [JobView].self).isEmpty)

            let good = dir.appendingPathComponent("season.yaml")
            try """
                jobs:
                  - {video: \(media("speaker-b.mp4")), audio: \(media("dub-1.wav")), lang: es, priority: 3, labels: {show: s1}, name: ep1}
                  - {video: \(media("speaker-b.mp4")), audio: \(media("dub-2.wav")), lang: de, labels: {show: s1}, name: ep1}
                  - {video: \(media("speaker-c.mp4")), audio: \(media("dub-2.wav")), lang: de, labels: {show: s1}, name: ep2}
                """.write(to: good, atomically: true, encoding: .utf8)
            let dry = try dubfarm(["submit", "--manifest", good.path, "--dry-run", "--coordinator", farm.controlEndpoint])
            #expect(dry.status == 0, "\(dry.err)")
            #expect(dry.out.contains("3 jobs checked; nothing submitted"))
            #expect(try farm.client().call(.jobs(JobsQuery()), as: [JobView].self).isEmpty)
            let queued = try dubfarm(["submit", "--manifest", good.path, "--coordinator", farm.controlEndpoint])
            #expect(queued.status == 0, "\(queued.err)")
            let jobs = try farm.client().call(.jobs(JobsQuery(labels: ["show": "s1"])), as: [JobView].self)
            #expect(jobs.count == 3)
            #expect(Set(jobs.map { "\($0.name ?? "")/\($0.labels?["lang"] ?? "")/\($0.priority)" }) == ["ep1/es/3", "ep1/de/0", "ep2/de/0"])
        }

        @Test("labels and names select jobs for jobs, set-priority, cancel, retry, wait and fetch --all", .enabled(if: haveMedia))
        func labelsSelect() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            let c = ["--coordinator", farm.controlEndpoint]
            for (audio, labels) in [("dub-1.wav", ["--label", "show=a", "--lang", "es"]), ("dub-2.wav", ["--label", "show=a", "--lang", "de"]),
                                    ("dub-1.wav", ["--label", "show=b", "--name", "other"])] {
                let r = try dubfarm(["submit", media("speaker-c.mp4"), "--audio", media(audio)] + labels + c)
                #expect(r.status == 0, "\(r.err)")
            }
            let listed = try dubfarm(["jobs", "--label", "show=a", "--json"] + c)
            let a = try JSONDecoder.iso.decode([JobView].self, from: Data(listed.out.utf8))
            #expect(a.map(\.id).sorted() == [1, 2])
            #expect(try dubfarm(["jobs", "--name", "other", "--json"] + c).out.contains("\"id\" : 3"))

            let pri = try dubfarm(["set-priority", "--label", "show=a", "--to", "7"] + c)
            #expect(pri.status == 0, "\(pri.err)")
            let views = try farm.client().call(.jobs(JobsQuery()), as: [JobView].self)
            #expect(views.map(\.priority) == [0, 7, 7])
            let events = try farm.client().call(.events(EventsQuery(job: 1)), as: [EventView].self)
            #expect(events.contains { $0.reason == "priority 0 → 7" })

            #expect(try dubfarm(["cancel", "--label", "show=a"] + c).status == 0)
            let states = try farm.client().call(.jobs(JobsQuery()), as: [JobView].self).map(\.state)
            #expect(states[1...] == [.cancelled, .cancelled] && states[0] != .cancelled, "\(states)")
            #expect(try dubfarm(["retry", "--label", "show=a"] + c).status == 0)
            try farm.startWorker("w1")
            let out = farm.dir.appendingPathComponent("out")
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            let waited = try dubfarm(["wait", "--label", "show=a"] + c, timeout: 300)
            #expect(waited.status == 0, "\(waited.out)\(waited.err)")
            #expect(waited.out.contains("2 of 2 jobs done"))
            let fetched = try dubfarm(["fetch", "--all", "--label", "show=a", "--out", out.path + "/{job}.{lang}.mp4"] + c)
            #expect(fetched.status == 0, "\(fetched.err)")
            #expect(Set(try FileManager.default.contentsOfDirectory(atPath: out.path)) == ["1.es.mp4", "2.de.mp4"])
            // One job with a pattern: its placeholders come from the job itself.
            let one = try dubfarm(["fetch", "2", "--out", out.path + "/one-{stem}.{lang}.mp4"] + c)
            #expect(one.status == 0, "\(one.err)")
            #expect(FileManager.default.fileExists(atPath: out.path + "/one-speaker-c.de.mp4"), "\(one.out)")
        }

        @Test("jobs --watch prints the list again when a job changes")
        func watch() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            let watching = BackgroundCommand(["jobs", "--watch", "--coordinator", farm.controlEndpoint], timeout: 30)
            try await Task.sleep(for: .seconds(2))
            try farm.startWorker("w1")
            try farm.wait(job: job)
            try await Task.sleep(for: .seconds(2.5))
            let r = try watching.join(timeout: 60)
            #expect(r.timedOut, "--watch runs until stopped")
            let tables = r.stdout.components(separatedBy: "--- ")
            #expect(tables.count >= 3, "a table per change:\n\(r.stdout)")
            #expect(tables.contains { $0.contains("running") }, "\(r.stdout)")
            #expect(tables.last?.contains("done") == true, "\(r.stdout)")
        }

        @Test("gc removes finished jobs' files and unused uploads, never an unfinished job's", .enabled(if: haveMedia))
        func gc() async throws {
            let farm = try await TestFarm.start(workers: 1)
            defer { farm.shutdown() }
            let c = ["--coordinator", farm.controlEndpoint]
            let finished = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            try farm.wait(job: finished)
            farm.kill(worker: "w1")
            // Shares its video with the finished job; waits for a worker.
            let live = try farm.submit(media("speaker-c.mp4"), audio: media("dub-2.wav"))
            try farm.wait(job: live, for: [.running])
            let blobs = farm.store.root.appendingPathComponent("blobs")
            let unused = try FileManager.default.contentsOfDirectory(atPath: blobs.path).count

            let dry = try dubfarm(["gc", "--older-than", "0", "--dry-run", "--json"] + c)
            let would = try JSONDecoder().decode(GCReport.self, from: Data(dry.out.utf8))
            #expect(would.jobs == [finished] && would.uploads == 1 && would.dryRun)
            #expect(FileManager.default.fileExists(atPath: farm.output(finished)))

            let r = try dubfarm(["gc", "--older-than", "0"] + c)
            #expect(r.status == 0, "\(r.err)")
            #expect(r.out.contains("removed the files of 1 finished job (\(finished)), 1 unused upload"), "\(r.out)")
            #expect(!FileManager.default.fileExists(atPath: farm.store.root.appendingPathComponent("jobs/\(finished)").path))
            #expect(try FileManager.default.contentsOfDirectory(atPath: blobs.path).count == unused - 1, "dub-1.wav went, the shared video stayed")
            let fetch = try dubfarm(["fetch", "\(finished)", "--out", farm.dir.appendingPathComponent("x.mp4").path] + c)
            #expect(fetch.status == 2 && fetch.err.contains("removed by gc"), "\(fetch.err)")
            #expect(try dubfarm(["retry", "\(finished)"] + c).err.contains("removed by gc"))
            #expect(try farm.status(finished).job.mediaRemovedAt != nil)

            // The unfinished job kept everything it needs.
            try farm.startWorker("w2")
            #expect(try farm.wait(job: live).job.state == .done)
            #expect(try dubfarm(["gc", "--older-than", "1d"] + c).out.contains("removed the files of 0 finished jobs"))
        }

        @Test("media.retention_hours: the coordinator removes a finished job's files by itself", .enabled(if: haveMedia))
        func retention() async throws {
            // 0.001 h = 3.6 s: the coordinator collects every 0.9 s.
            let farm = try await TestFarm.start(workers: 1, settings: ["DUBFARM_MEDIA_RETENTION_HOURS": "0.001"])
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            try farm.wait(job: job)
            #expect(FileManager.default.fileExists(atPath: farm.output(job)))
            try farm.waitFor("the finished job's files to go", timeout: 60) { try farm.status(job).job.mediaRemovedAt != nil }
            #expect(!FileManager.default.fileExists(atPath: farm.store.root.appendingPathComponent("jobs/\(job)").path))
            try farm.waitFor("its unused uploads to go", timeout: 60) {
                try FileManager.default.contentsOfDirectory(atPath: farm.store.root.appendingPathComponent("blobs").path).isEmpty
            }
            #expect(farm.tail("coordinator", lines: 400).contains("gc removed the files of 1 finished job"))
        }

        @Test("the client config file names the coordinator; an unknown key is refused by name", .enabled(if: haveMedia))
        func clientConfig() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            let file = farm.dir.appendingPathComponent("client.yml")
            try "coordinator: \"\(farm.controlEndpoint)\"\ntimeout: 5\n".write(to: file, atomically: true, encoding: .utf8)
            _ = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            let ok = try dubfarm(["jobs", "--json"], environment: ["DUBFARM_CLIENT_CONFIG": file.path, "DUBFARM_LOCAL_DIR": farm.dir.path])
            #expect(ok.status == 0, "\(ok.out)\(ok.err)")
            #expect(try JSONDecoder.iso.decode([JobView].self, from: Data(ok.out.utf8)).map(\.id) == [1])
            try "coordinater: tcp://x:1\n".write(to: file, atomically: true, encoding: .utf8)
            let bad = try dubfarm(["jobs"], environment: ["DUBFARM_CLIENT_CONFIG": file.path, "DUBFARM_LOCAL_DIR": farm.dir.path])
            #expect(bad.status == 2 && bad.err.contains("coordinater") && bad.err.contains(file.path), "\(bad.err)")
        }

        @Test("submit --wait --out survives a coordinator SIGKILL and `local up`; `local down` then leaves nothing running",
              .enabled(if: haveMedia))
        func waitAcrossCoordinatorLoss() throws {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-local-\(UUID().uuidString.prefix(8))")
            defer {
                _ = try? dubfarm(["local", "down", "--dir", dir.path])
                try? FileManager.default.removeItem(at: dir)
            }
            let up = try dubfarm(["local", "up", "--dir", dir.path, "--workers", "1", "--stage", "passthrough"], timeout: 120)
            #expect(up.status == 0, "\(up.out)\(up.err)")
            let first = try #require(LocalFarmState.load(directory: dir))
            let dashboard = try #require(first.dashboardURL)
            #expect(up.out.contains("dashboard:   \(dashboard)"))
            #expect(try httpGet(dashboard + "healthz") == "ok\n")
            // The worker is frozen, so the job cannot finish before its coordinator dies.
            let worker = try #require(first.workerPIDs.first)
            kill(worker, SIGSTOP)
            let env = ["DUBFARM_LOCAL_DIR": dir.path]
            let out = dir.appendingPathComponent("dubbed.mp4").path
            let waiting = BackgroundCommand(["submit", media("speaker-c.mp4"), "--audio", media("dub-1.wav"), "--wait", "--out", out,
                                             "--reconnect", "120", "--timeout", "2"], environment: env, timeout: 400)
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline {
                let jobs = try? dubfarm(["jobs", "--json"], environment: env, timeout: 20)
                if let o = jobs?.out, o.contains("\"state\" : \"running\"") { break }
                usleep(200_000)
            }
            kill(first.coordinatorPID, SIGKILL)
            // Down for longer than the client's --timeout: its next call finds nobody there.
            Thread.sleep(forTimeInterval: 4)
            let again = try dubfarm(["local", "up", "--dir", dir.path, "--workers", "1", "--stage", "passthrough"], timeout: 120)
            #expect(again.status == 0, "\(again.out)\(again.err)")
            #expect(again.out.contains("adopted 1 worker(s) still running from before: local-1"), "\(again.out)")
            let second = try #require(LocalFarmState.load(directory: dir))
            #expect(second.controlEndpoint == first.controlEndpoint && second.workerPIDs == [worker])
            kill(worker, SIGCONT)

            let r = try waiting.join(timeout: 420)
            #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
            #expect(r.stderr.contains("lost the coordinator"), "\(r.stderr)")
            #expect(r.stderr.contains("reconnected to the coordinator"), "\(r.stderr)")
            #expect(try MediaProbe.probe(path: out).video?.frameCount == 125)

            let down = try dubfarm(["local", "down", "--dir", dir.path], timeout: 90)
            #expect(down.status == 0, "\(down.err)")
            #expect(LocalFarmState.processes(directory: dir.path).isEmpty)
            #expect(!ProcessControl.isAlive(worker) && !ProcessControl.isAlive(second.coordinatorPID))
        }
    }
}
