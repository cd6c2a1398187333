import Crypto
import DubfarmCore
import FaceAnalysis
import FarmProtocol
import FarmTestSupport
import LocalFarm
import Foundation
import MediaPipeline
import Testing

/// The trainer's Python environment (`make py-deps`): `make test` makes it before the tests run.
let trainerPython: String = {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return ProcessInfo.processInfo.environment["DUBFARM_PYTHON"] ?? repo.appendingPathComponent(".venv/bin/python").path
}()
let demoVideo: String = {
    let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    return repo.appendingPathComponent("demo/speaker.mp4").path
}()

/// Per-job personalisation on a real farm (issue 14): the coordinator builds the job's dataset,
/// a `--personalise` worker fine-tunes the committed default model on it under a lease, and the
/// job's segments run on the weights it returns. A tiny budget: these test the farm's part
/// (phase, lease, checkpoints, weights delivery), `make eval` measures what it buys.
@Suite("Personalisation", .serialized,
       .enabled(if: haveMedia && FileManager.default.fileExists(atPath: HaarCascade.defaultPath)
                    && FileManager.default.isExecutableFile(atPath: trainerPython)
                    && FileManager.default.fileExists(atPath: committedModelDirectory.appendingPathComponent("model.safetensors").path),
                "needs ../shared/media, the face models, the trainer's .venv and models/dubfarm-small"))
struct PersonaliseTests {
    static let settings = [
        "DUBFARM_SEGMENTS_SECONDS": "2",
        "DUBFARM_PERSONALISE_MAX_FRAMES": "100",
        "DUBFARM_PERSONALISE_CHECKPOINT_SECONDS": "2",
        "DUBFARM_PYTHON": trainerPython,
        // The fine-tune is CPU-bound for many seconds; the coordinator must not take the lease
        // back from a live worker meanwhile.
        "DUBFARM_WORKERS_LEASE_SECONDS": "20",
    ]

    func startPersonalisingWorker(_ farm: TestFarm, _ name: String) throws {
        try farm.startWorker(name, stage: "dub", extra: ["--personalise", "--cache-dir", farm.dir.appendingPathComponent("cache-\(name)").path])
    }

    /// `(job, weights)` of every "segment runs on the job's personalised weights" line of a worker's log.
    func weightsLines(_ farm: TestFarm, _ worker: String) -> [(job: Int64, weights: String)] {
        let log = (try? String(contentsOf: farm.log(worker), encoding: .utf8)) ?? ""
        return log.split(separator: "\n").filter { $0.contains("segment runs on the job's personalised weights") }.compactMap { line in
            guard let j = line.firstMatch(of: /job=(\d+)/), let w = line.firstMatch(of: /weights=([0-9a-f]{64})/) else { return nil }
            return (Int64(j.1)!, String(w.1))
        }
    }

    @Test("two personalised jobs side by side on the same two workers: each segment on its own job's weights, named in status and logs; frame-exact")
    func twoJobsSideBySide() async throws {
        let farm = try await TestFarm(settings: Self.settings)
        defer { farm.shutdown() }
        try farm.startCoordinator()
        try startPersonalisingWorker(farm, "p1")
        try startPersonalisingWorker(farm, "p2")
        try farm.waitForWorkers(2, "2 personalising dub workers", timeout: 120)
        #expect(farm.tail("p1", lines: 50).contains("personalisation on"))

        let a = try farm.submit(demoVideo, audio: media("dub-1.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 6))
        let b = try farm.submit(media("speaker-b.mp4"), audio: media("dub-2.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 6))
        try farm.waitFor("job \(a) personalising", timeout: 60) { try farm.status(a).job.state != .queued && farm.status(a).job.state != .planning }
        let da = try farm.wait(job: a, timeout: 600), db = try farm.wait(job: b, timeout: 600)
        for d in [da, db] {
            #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(farm.tail("coordinator", lines: 40))\n\(farm.tail("p1", lines: 40))\n\(farm.tail("p2", lines: 40))")
        }
        guard da.job.state == .done, db.job.state == .done, let wa = da.job.weights, let wb = db.job.weights else { return }
        #expect(wa != wb, "two videos, two sets of weights")
        for (d, w) in [(da, wa), (db, wb)] {
            let p = try #require(d.job.personalisation)
            #expect(p.state == "done" && p.weights == w && p.step > 0, "\(p)")
            #expect(p.report?.contains("psnr_after") == true, "the trainer's held-back figures are kept: \(p.report ?? "none")")
            // Content-addressed: the file in the store hashes to its name.
            let file = farm.store.root.appendingPathComponent("weights/\(w).safetensors")
            let bytes = try [UInt8](Data(contentsOf: file))
            #expect(SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() == w)
        }
        // Every segment was dubbed on its own job's weights, and named them in the worker's log.
        let lines = weightsLines(farm, "p1") + weightsLines(farm, "p2")
        #expect(lines.count == da.segments.count + db.segments.count, "one line per segment: \(lines)")
        #expect(lines.allSatisfy { ($0.job == a && $0.weights == wa) || ($0.job == b && $0.weights == wb) }, "\(lines)")
        let workersOf = { (job: Int64, d: JobDetail) in Set(d.segments.compactMap(\.worker)) }
        print("personalise side by side: job \(a) on \(workersOf(a, da)), job \(b) on \(workersOf(b, db))")
        // Frame-exact, like any other job.
        for (job, frames) in [(a, 125), (b, try MediaProbe.probe(path: media("speaker-b.mp4")).video!.frameCount)] {
            #expect(try MediaProbe.probe(path: farm.output(job)).video?.frameCount == frames)
            if let probe = ffprobeCounts(farm.output(job)) { #expect(probe.frames == frames) }
        }
        // The phase is in the job's history.
        let events = try farm.db.events(job: a)
        #expect(events.contains { $0.to == "personalising" }, "\(events)")
    }

    @Test("a worker SIGKILLed during the phase: another resumes from the last checkpoint and the job finishes")
    func resumeAfterKill() async throws {
        let farm = try await TestFarm(settings: Self.settings)
        defer { farm.shutdown() }
        try farm.startCoordinator()
        try startPersonalisingWorker(farm, "k1")
        try farm.waitForWorkers(1, "the first personalising worker", timeout: 120)
        let job = try farm.submit(demoVideo, audio: media("dub-1.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 40))
        var checkpointStep = 0
        try farm.waitFor("a checkpoint of job \(job)", timeout: 300) {
            checkpointStep = try farm.status(job).job.personalisation?.checkpointStep ?? 0
            return checkpointStep > 0
        }
        farm.kill(worker: "k1")
        try startPersonalisingWorker(farm, "k2")
        let d = try farm.wait(job: job, timeout: 600)
        #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(farm.tail("coordinator", lines: 40))\n\(farm.tail("k2", lines: 40))")
        let p = try #require(d.job.personalisation)
        #expect(p.leases == 2 && p.failures == 0, "lost, not failed: \(p)")
        #expect((p.resumedFrom ?? 0) >= checkpointStep, "k2 resumed at step \(p.resumedFrom ?? -1), the checkpoint was at \(checkpointStep)")
        let events = try farm.db.events(job: job)
        #expect(events.contains { $0.worker == "k2" && ($0.reason ?? "").contains("resumes from the checkpoint of step") }, "\(events)")
        #expect(farm.tail("k2", lines: 300).contains("resume_step"), "k2 was given the checkpoint")
        #expect(try MediaProbe.probe(path: farm.output(job)).video?.frameCount == 125)
    }

    @Test("data-parallel on two workers (torchrun): both train, the lease holder returns the weights, the job runs on them; a member killed mid-way costs one attempt, resumed from the last checkpoint")
    func dataParallel() async throws {
        let farm = try await TestFarm(settings: Self.settings)
        defer { farm.shutdown() }
        try farm.startCoordinator()
        try startPersonalisingWorker(farm, "g1")
        try startPersonalisingWorker(farm, "g2")
        try farm.waitForWorkers(2, "2 personalising dub workers", timeout: 120)
        let job = try farm.submit(demoVideo, audio: media("dub-1.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 8, workers: 2))
        let d = try farm.wait(job: job, timeout: 600)
        let logs = { "\(farm.tail("coordinator", lines: 40))\n\(farm.tail("g1", lines: 40))\n\(farm.tail("g2", lines: 40))" }
        #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(logs())")
        guard d.job.state == .done, let weights = d.job.weights else { return }
        let p = try #require(d.job.personalisation)
        #expect(p.worldSize == 2 && p.workers == 2 && p.leases == 1 && p.failures == 0, "\(p)")
        let events = try farm.db.events(job: job)
        #expect(events.contains { ($0.reason ?? "").contains("training on 2 workers") }, "\(events)")
        // One worker was rank 0, the other rank 1, at rank 0's rendezvous; the member left when it ended.
        let starts = ["g1", "g2"].map { farm.tail($0, lines: 400) }
        #expect(starts.contains { $0.contains("rank=0 of 2 at 127.0.0.1:") } && starts.contains { $0.contains("rank=1 of 2 at 127.0.0.1:") }, "\(logs())")
        // The member leaves once its trainer has exited, which may be after the job is done.
        try farm.waitFor("the member to say it left", timeout: 60) {
            ["g1", "g2"].contains { farm.tail($0, lines: 400).contains("left the data-parallel personalisation") }
        }
        #expect(try MediaProbe.probe(path: farm.output(job)).video?.frameCount == 125)
        #expect(weightsLines(farm, "g1").count + weightsLines(farm, "g2").count == d.segments.count)
        #expect((weightsLines(farm, "g1") + weightsLines(farm, "g2")).allSatisfy { $0.weights == weights })

        // A member killed mid-way (SIGKILL: its trainer sees its stdin close): the gang stops,
        // the lease holder checkpoints and the attempt fails; the next resumes from that
        // checkpoint with the workers idle then.
        let second = try farm.submit(demoVideo, audio: media("dub-2.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 40, workers: 2))
        var lead = ""
        try farm.waitFor("job \(second) training on 2 workers with a checkpoint", timeout: 300) {
            let p = try farm.status(second).job.personalisation
            lead = p?.worker ?? ""
            return p?.state == "leased" && p?.worldSize == 2 && (p?.checkpointStep ?? 0) > 0
        }
        let member = lead == "g1" ? "g2" : "g1"
        farm.kill(worker: member)
        let e = try farm.wait(job: second, timeout: 600)
        #expect(e.job.state == .done, "\(e.job.error ?? "")\n\(logs())")
        let q = try #require(e.job.personalisation)
        #expect(q.leases == 2 && q.failures == 1 && q.worldSize == 1, "one attempt lost with the member, the next alone: \(q)")
        #expect((q.resumedFrom ?? 0) > 0, "resumed from a checkpoint: \(q)")
        #expect(farm.tail(lead, lines: 400).contains("personalisation failed"), "\(farm.tail(lead, lines: 60))")
        #expect(try MediaProbe.probe(path: farm.output(second)).video?.frameCount == 125)
    }

    @Test("the coordinator SIGKILLed and restarted mid-phase: the worker says READY with its fine-tune, keeps its lease and finishes it")
    func coordinatorRestart() async throws {
        let farm = try await TestFarm(settings: Self.settings)
        defer { farm.shutdown() }
        try farm.startCoordinator()
        try startPersonalisingWorker(farm, "r1")
        try farm.waitForWorkers(1, "a personalising worker", timeout: 120)
        let job = try farm.submit(demoVideo, audio: media("dub-1.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 20))
        try farm.waitFor("job \(job) training", timeout: 300) { try farm.status(job).job.personalisation?.step ?? 0 > 0 }
        farm.killCoordinator()
        try farm.startCoordinator()
        let d = try farm.wait(job: job, timeout: 600)
        #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(farm.tail("coordinator", lines: 40))\n\(farm.tail("r1", lines: 40))")
        let p = try #require(d.job.personalisation)
        #expect(p.leases == 1 && p.failures == 0, "one lease from start to end: \(p)")
        #expect(farm.tail("coordinator", lines: 300).contains("worker resumed its personalisation"), "\(farm.tail("coordinator", lines: 60))")
    }

    @Test("the CLI: --personalise alone and =SECONDS reach the coordinator; status shows the phase; bad uses exit 2")
    func commandLine() async throws {
        let farm = try await TestFarm.start(workers: 0, settings: Self.settings)
        defer { farm.shutdown() }
        let c = ["--coordinator", farm.controlEndpoint]
        let lonely = try dubfarm(["submit", demoVideo, "--audio", media("dub-1.wav"), "--personalise-fallback"] + c)
        #expect(lonely.status == 2 && lonely.err.contains("--personalise-fallback goes with --personalise"), "\(lonely.err)")
        let negative = try dubfarm(["submit", demoVideo, "--audio", media("dub-1.wav"), "--personalise=-3"] + c)
        #expect(negative.status == 2, "\(negative.err)")
        // The test farm's default stage is passthrough, which runs no model: the bare flag got there.
        let passthrough = try dubfarm(["submit", demoVideo, "--audio", media("dub-1.wav"), "--personalise"] + c)
        #expect(passthrough.status == 2 && passthrough.err.contains("the 'passthrough' stage runs none"), "\(passthrough.err)")
        #expect(try dubfarm(["submit", "--help"]).out.contains("--personalise"))
        let workersAlone = try dubfarm(["submit", demoVideo, "--audio", media("dub-1.wav"), "--personalise-workers", "2"] + c)
        #expect(workersAlone.status == 2 && workersAlone.err.contains("--personalise-workers goes with --personalise"), "\(workersAlone.err)")
        let noWorkers = try dubfarm(["submit", demoVideo, "--audio", media("dub-1.wav"), "--personalise=30", "--personalise-workers", "0"] + c)
        #expect(noWorkers.status == 2 && noWorkers.err.contains("1…64"), "\(noWorkers.err)")

        // No worker can personalise: the dataset is built, then the job waits, saying so.
        let submitted = try dubfarm(["submit", demoVideo, "--audio", media("dub-1.wav"), "--stage", "dub", "--personalise=30",
                                     "--personalise-workers", "3"] + c)
        #expect(submitted.status == 0, "\(submitted.err)")
        let job = try #require(Int64(submitted.out.trimmingCharacters(in: .whitespacesAndNewlines)))
        try farm.waitFor("the dataset of job \(job)", timeout: 120) { try farm.status(job).job.personalisation?.state == "pending" }
        let d = try farm.status(job)
        #expect(d.job.state == .personalising && d.job.personalisation?.budgetSeconds == 30)
        #expect((d.job.personalisation?.datasetFrames ?? 0) >= 90, "100 frames asked, a face on nearly all: \(d.job.personalisation!)")
        let status = try dubfarm(["status", "\(job)"] + c)
        #expect(status.out.contains("personalise  waiting for a worker that can personalise"), "\(status.out)")
        #expect(status.out.contains("up to 3 workers"), "\(status.out)")
        #expect(try dubfarm(["cancel", "\(job)"] + c).status == 0)
        #expect(try farm.status(job).job.personalisation?.state == "failed")
    }

    @Test("footage the trainer cannot use: the job fails with the reason, or runs on the default weights when it asked to")
    func failureAndFallback() async throws {
        let farm = try await TestFarm(settings: Self.settings)
        defer { farm.shutdown() }
        try farm.startCoordinator()
        try farm.startWorker("d1", stage: "dub")
        try farm.waitForWorkers(1, "a dub worker", timeout: 120)
        // A video without a face: no personalisation dataset can be built from it.
        let noFace = farm.dir.appendingPathComponent("noface.mp4").path
        _ = try ProcessControl.run("/usr/bin/ffmpeg", ["-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=2",
                                                       "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-shortest",
                                                       "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", noFace], timeout: 60)
        let failing = try farm.submit(noFace, audio: media("dub-1.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 5))
        let f = try farm.wait(job: failing, timeout: 300)
        #expect(f.job.state == .failed)
        #expect(f.job.error?.contains("personalisation failed") == true && f.job.error?.contains("noface.mp4") == true, "\(f.job.error ?? "")")
        #expect(f.job.personalisation?.state == "failed")

        let falling = try farm.submit(noFace, audio: media("dub-1.wav"), stage: "dub", personalise: PersonaliseRequest(seconds: 5, fallback: true))
        let g = try farm.wait(job: falling, timeout: 300)
        #expect(g.job.state == .done, "\(g.job.error ?? "")")
        #expect(g.job.weights == nil, "the default weights")
        #expect(try farm.db.events(job: falling).contains { ($0.reason ?? "").contains("running on the default weights") })
    }
}
