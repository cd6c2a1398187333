import DubfarmCore
import FarmProtocol
import Foundation
import LocalFarm
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

        @Test("SIGTERM past the grace period: the worker returns the frames it finished (PARTIAL), only the rest is redone, nothing counts as a failure, and the output is frame-exact")
        func sigtermReturnsFinishedFrames() async throws {
            let farm = try await TestFarm()
            defer { farm.shutdown() }
            try farm.startCoordinator()
            // 12 s of a picture that changes every frame: segments 0..<250 and 250..<300.
            let input = farm.dir.appendingPathComponent("moving.mp4").path
            try runFFmpeg(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "12", "-c:v", "libx264", "-g", "50",
                           "-pix_fmt", "yuv420p", input], timeout: 120)
            // 20 s per segment, spread over its frames (80 ms each): a 2 s grace ends mid-segment.
            try farm.startWorker("hasty", stage: "sleep", extra: ["--sleep-seconds", "20", "--grace", "2"])
            let job = try farm.submit(input, audio: media("dub-1.wav"), stage: "sleep")
            try farm.waitFor("segment started on the worker", timeout: 30) { farm.tail("hasty", lines: 200).contains("segment started") }
            farm.kill(worker: "hasty", signal: SIGTERM)
            try farm.waitFor("the partial result kept", timeout: 30) { try farm.status(job).segments.count == 3 }
            let split = try farm.status(job).segments
            let kept = split[0], rest = split[1]
            #expect(kept.index == 0 && kept.state == .done && kept.worker == "hasty" && kept.startFrame == 0)
            #expect(kept.endFrame > 0 && kept.endFrame < 250, "hasty finished frames 0..<\(kept.endFrame)")
            #expect(rest.index == 2 && rest.startFrame == kept.endFrame && rest.endFrame == 250 && rest.state == .pending && rest.leases == 0)
            #expect(split[2].index == 1 && split[2].startFrame == 250 && split[2].endFrame == 300)
            #expect(try farm.status(job).job.segments.total == 3)
            try farm.waitFor("hasty gone", timeout: 20) { try farm.client().call(.workers, as: [WorkerView].self).isEmpty }

            try farm.startWorker("next", stage: "sleep", extra: ["--sleep-seconds", "0.1"])
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(farm.tail("coordinator", lines: 30))")
            #expect(d.segments.map(\.startFrame) == [0, kept.endFrame, 250])
            #expect(d.segments.allSatisfy { $0.failures == 0 && $0.state == .done })
            #expect(d.segments[0].leases == 1 && d.segments[0].worker == "hasty", "the finished frames were not redone")
            #expect(d.segments.dropFirst().allSatisfy { $0.worker == "next" && $0.leases == 1 })
            let events = try farm.db.events(job: job)
            #expect(events.contains { $0.segment == 0 && $0.to == "done" && ($0.reason ?? "").hasPrefix("partial: hasty stopped after frames 0..<\(kept.endFrame)") },
                    "\(events.map { "\($0.segment.map(String.init) ?? "-") \($0.reason ?? "")" })")

            // Frame-exact: every frame of the output is the source's frame of that number.
            let psnr = try perFramePSNR(farm.output(job), input)
            #expect(psnr.count == 300)
            #expect(psnr.allSatisfy { $0 > 35 }, "frames that do not match the source (dB): \(psnr.enumerated().filter { $0.element <= 35 }.prefix(10))")
        }
    }
}

/// The PSNR (dB, all planes) of each video frame of `path` against the same frame of
/// `reference`, in order (ffmpeg's psnr filter). About 45 dB for a re-encode of the same frame,
/// about 25 dB for the neighbouring frame of a moving picture.
func perFramePSNR(_ path: String, _ reference: String) throws -> [Double] {
    let r = try ProcessControl.run("/usr/bin/ffmpeg", ["-v", "error", "-i", path, "-i", reference,
                                                       "-lavfi", "[0:v][1:v]psnr=stats_file=-", "-f", "null", "-"], timeout: 120)
    guard r.status == 0 else { throw TestTimeout(description: "ffmpeg psnr failed: \(r.stderr)") }
    return r.stdout.split(separator: "\n").compactMap { line in
        line.split(separator: " ").first { $0.hasPrefix("psnr_avg:") }.flatMap { Double($0.dropFirst("psnr_avg:".count)) ?? .infinity }
    }
}
