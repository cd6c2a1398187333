import DubfarmCore
import FaceAnalysis
import FarmClient
import FarmProtocol
import Foundation
import LocalFarm
import Testing

extension TestFarm {
    /// Submits a job that requires `model`.
    func submit(_ video: String, audio: String, stage: String, model: String) throws -> Int64 {
        let c = try client(timeout: 60)
        let v = try c.upload(path: video), a = try c.upload(path: audio)
        let name = { (p: String) in URL(fileURLWithPath: p).lastPathComponent }
        return try c.call(.submit(SubmitSpec(video: v, audio: a, videoName: name(video), audioName: name(audio),
                                             stage: stage, model: model)), as: JobView.self).id
    }
}

extension Integration {
    @Suite("Capabilities", .serialized,
           .enabled(if: haveMedia && FileManager.default.fileExists(atPath: HaarCascade.defaultPath), "needs ../shared/media and the face models"))
    struct CapabilityTests {
        @Test("a job requiring a model the only worker lacks stays pending and says why; a worker holding it then takes it")
        func modelRequirement() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            // The `tiny` configuration's seeded weights, written to a directory: the worker given
            // them advertises `tiny@<hash>`.
            let weights = farm.dir.appendingPathComponent("tiny-model").path
            let made = try ProcessControl.run(dubfarmExecutable, ["model", "init", "--config", "tiny", "--seed", "7", "--out", weights], timeout: 120)
            #expect(made.status == 0, "\(made.stderr)")

            try farm.startWorker("small", stage: "dub", extra: ["--model", "untrained:small"])
            try farm.waitForWorkers(1, "the small dub worker", timeout: 120)
            let small = try #require(try farm.client().call(.workers, as: [WorkerView].self).first)
            #expect(small.model == "small@untrained-seed-1" && small.threads == 1)

            let job = try farm.submit(media("speaker-a.mp4"), audio: media("dub-1.wav"), stage: "dub", model: "tiny")
            // Planned and running, its segment pending, and status says why.
            var waiting: JobDetail?
            try farm.waitFor("job \(job) to wait for a tiny worker", timeout: 120) {
                waiting = try farm.status(job)
                return waiting!.job.waitingFor != nil
            }
            let w = try #require(waiting)
            #expect(w.job.state == .running && w.job.model == "tiny")
            #expect(w.job.waitingFor == "waiting for a worker with model tiny (connected dub workers hold: small@untrained-seed-1)")
            #expect(w.segments.allSatisfy { $0.state == .pending && $0.leases == 0 })
            // `jobs` shows it too, and the CLI prints it.
            let listed = try farm.client().call(.jobs(JobsQuery(state: nil, limit: 10)), as: [JobView].self)
            #expect(listed.first { $0.id == job }?.waitingFor == w.job.waitingFor)
            var env = farm.environment
            env["DUBFARM_COORDINATOR"] = farm.controlEndpoint
            let cli = try ProcessControl.run(dubfarmExecutable, ["status", String(job)], environment: env, timeout: 60)
            #expect(cli.stdout.contains("waiting for a worker with model tiny"), "\(cli.stdout)\(cli.stderr)")
            // The idle small worker was offered work all along and got none of this job.
            #expect(try farm.client().call(.workers, as: [WorkerView].self).first?.state == "idle")

            try farm.startWorker("tiny", stage: "dub", extra: ["--model", weights])
            let d = try farm.wait(job: job, timeout: 600)
            #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(farm.tail("tiny", lines: 30))")
            #expect(d.segments.allSatisfy { $0.worker == "tiny" }, "only the worker holding the model took the job")
            #expect(d.job.waitingFor == nil)
            let events = try farm.client().call(.events(EventsQuery(job: job, after: 0, limit: 1000)), as: [EventView].self)
            #expect(!events.contains { $0.to == "leased" && $0.worker == "small" })
        }
    }
}
