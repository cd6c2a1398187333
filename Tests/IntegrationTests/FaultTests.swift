import DubfarmCore
import FarmProtocol
import Foundation
import Testing
@testable import MediaPipeline

extension Integration {
    @Suite("Farm, failures", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct FaultTests {
        @Test("a segment longer than the liveness timeout keeps its lease: heartbeats continue while it works")
        func longSegmentKeepsLease() async throws {
            let farm = try await TestFarm(settings: [:])
            defer { farm.shutdown() }
            try farm.startCoordinator()
            // 3 s of work per segment against 1 s of liveness (0.2 s × 5).
            try farm.startWorker("slow", stage: "sleep", extra: ["--sleep-seconds", "3"])
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), stage: "sleep")
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done)
            #expect(d.segments.allSatisfy { $0.leases == 1 }, "the lease was lost while the segment was processed")
        }

        @Test("failed attempts back off and retry up to the limit; then the segment is dead and the job failed with its error")
        func retriesThenDead() async throws {
            let farm = try await TestFarm(settings: ["DUBFARM_RETRY_MAX_ATTEMPTS": "3"])
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("broken", stage: "fail")
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), stage: "fail")
            let d = try farm.wait(job: job)
            #expect(d.job.state == .failed)
            #expect(d.job.error?.contains("fails every segment by design") == true, "\(d.job.error ?? "")")
            #expect(d.segments[0].state == .dead)
            #expect(d.segments[0].failures == 3)
        }

        @Test("SIGTERM: a worker finishes its segment within the grace period, then leaves")
        func sigtermFinishes() async throws {
            let farm = try await TestFarm()
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("polite", stage: "sleep", extra: ["--sleep-seconds", "2", "--grace", "30"])
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), stage: "sleep")
            // Leased in the database is not yet received by the worker: wait for the worker itself to start it,
            // or the signal can land while it is idle and it rightly leaves at once.
            try farm.waitFor("segment started on the worker", timeout: 30) { farm.tail("polite", lines: 200).contains("segment started") }
            farm.kill(worker: "polite", signal: SIGTERM)
            let d = try farm.wait(job: job, for: [.stitching, .done, .failed], timeout: 60)
            #expect(d.segments[0].state == .done)
            #expect(d.segments[0].leases == 1)
            try farm.waitFor("worker gone", timeout: 20) { try farm.client().call(.workers, as: [WorkerView].self).isEmpty }
        }

        @Test("SIGTERM past the grace period: the worker hands its segment back, which is not counted as a failure")
        func sigtermHandsBack() async throws {
            let farm = try await TestFarm()
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("hasty", stage: "sleep", extra: ["--sleep-seconds", "30", "--grace", "0.2"])
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), stage: "sleep")
            try farm.waitFor("segment started on the worker", timeout: 30) { farm.tail("hasty", lines: 200).contains("segment started") }
            farm.kill(worker: "hasty", signal: SIGTERM)
            try farm.waitFor("segment back in the queue", timeout: 20) { try farm.status(job).segments.first?.state == .pending }
            let s = try farm.status(job).segments[0]
            #expect(s.failures == 0)
            try farm.startWorker("next", stage: "sleep", extra: ["--sleep-seconds", "0.1"])
            #expect(try farm.wait(job: job).job.state == .done)
        }
    }
}
