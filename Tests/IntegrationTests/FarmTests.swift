import DubfarmCore
import FarmProtocol
import FarmStore
import LocalFarm
import Foundation
import Testing
import ZeroMQ
@testable import MediaPipeline

/// End-to-end: a real coordinator and real workers (separate processes), real PostgreSQL, real
/// ZeroMQ sockets, real media.
extension Integration {
    @Suite("Farm, end to end", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct FarmTests {
        @Test("speaker-long + dub-long: 3 segments on both workers, 629 frames at 25 fps, audio as long as the video")
        func longVideo() async throws {
            let farm = try await TestFarm.start(workers: 2)
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"))
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done, "\(d.job.error ?? "")\n\(farm.tail("coordinator", lines: 30))")
            #expect(d.segments.map { $0.endFrame - $0.startFrame } == [250, 250, 129])
            #expect(Set(d.segments.compactMap(\.worker)).count == 2, "both workers should have processed segments")
            let info = try MediaProbe.probe(path: farm.output(job))
            let v = try #require(info.video)
            #expect(v.frameCount == 629)
            #expect(v.frameRate == Rational(25, 1))
            let a = try #require(info.audio)
            #expect(abs((a.duration ?? 0) - v.duration) <= 0.04, "audio \(a.duration ?? 0) s vs video \(v.duration) s")
            if let probe = ffprobeCounts(farm.output(job)) {
                #expect(probe.frames == 629)
                #expect(probe.rate == "25/1")
            }
            #expect(d.job.audioFit != nil)
        }

        @Test("speaker-a, variable frame rate (135 frames of 1/30 and 2/30 s over 6.07 s): re-timed at a constant 30 fps on its own timeline, the output lasts as long as the input, never sped up")
        func variableFrameRate() async throws {
            let source = try SourceIndexer.index(path: media("speaker-a.mp4")).info
            #expect(source.isVariableFrameRate && source.frameCount == 135)
            let expected = Int((source.timelineDuration * 30).rounded(.up))
            let farm = try await TestFarm.start(workers: 1)
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-a.mp4"), audio: media("dub-1.wav"))
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done, "\(d.job.error ?? "")")
            #expect(d.job.frames == expected)
            let v = try #require(try MediaProbe.probe(path: farm.output(job)).video)
            #expect(v.frameCount == expected && v.frameRate == Rational(30, 1) && !v.isVariableFrameRate)
            #expect(abs(Double(v.frameCount) / 30 - source.timelineDuration) < 1.0 / 30, "the picture keeps the input's duration")
            if let probe = ffprobeCounts(farm.output(job)) {
                #expect(probe.frames == expected)
                #expect(abs(probe.audioDuration - source.timelineDuration) < 1.0 / 30 + 0.025, "the dub track fits the real duration")
            }
            #expect(farm.tail("coordinator", lines: 200).contains("variable frame rate"), "the coordinator says why it re-cut")
        }

        @Test("an input from the wild: HEVC with B-frames and Opus in Matroska goes through frame-exact, lasting as long as the input")
        func hevcInMatroska() async throws {
            let farm = try await TestFarm.start(workers: 2)
            defer { farm.shutdown() }
            let kind = "hevc-bframes.mkv"
            let input = farm.dir.appendingPathComponent("speaker.mkv").path
            _ = try ProcessControl.run("/usr/bin/ffmpeg", ["-v", "error", "-i", media("speaker-long.mp4"), "-t", "8", "-c:v", "libx265",
                                                           "-preset", "ultrafast", "-x265-params", "log-level=error:bframes=4:keyint=50",
                                                           "-c:a", "libopus", input], timeout: 300)
            let source = try #require(try MediaProbe.probe(path: input).video)
            let job = try farm.submit(input, audio: media("dub-1.wav"))
            let d = try farm.wait(job: job, timeout: 300)
            #expect(d.job.state == .done, "\(kind): \(d.job.error ?? "")\n\(farm.tail("coordinator", lines: 30))")
            let v = try #require(try MediaProbe.probe(path: farm.output(job)).video)
            #expect(v.frameCount == source.frameCount, "\(kind)")
            #expect(abs(Double(v.frameCount) / v.frameRate.value - Double(source.frameCount) / source.frameRate.value) < 1e-6)
            if let probe = ffprobeCounts(farm.output(job)) { #expect(probe.frames == source.frameCount) }
        }

        @Test("cancel a running job: it stops, is cancelled, and the workers are free")
        func cancel() async throws {
            let farm = try await TestFarm.start(workers: 2, stage: "sleep")
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
            try farm.waitFor("a segment to be running", timeout: 60) { try farm.status(job).segments.contains { $0.state == .leased } }
            let reply = try farm.client().call(.cancel(job: job), as: JobView.self)
            #expect(reply.state == .cancelled)
            let d = try farm.wait(job: job)
            #expect(d.job.state == .cancelled)
            #expect(d.segments.allSatisfy { $0.state == .cancelled || $0.state == .done })
            try farm.waitFor("workers idle", timeout: 20) {
                try farm.client().call(.workers, as: [WorkerView].self).allSatisfy { $0.state == "idle" }
            }
            // Free workers take new work.
            let next = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), stage: "sleep")
            #expect(try farm.wait(job: next).job.state == .done)
        }

        @Test("SIGKILL a worker mid-segment: another worker redoes the segment and the job completes")
        func workerKilled() async throws {
            let farm = try await TestFarm.start(workers: 2, stage: "sleep", settings: [:])
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
            var victim = ""
            try farm.waitFor("a segment in progress", timeout: 60) {
                let s = try farm.status(job).segments.first { $0.state == .leased && $0.worker != nil }
                victim = s?.worker ?? ""
                return s != nil
            }
            farm.kill(worker: victim)
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done, "\(d.job.error ?? "")")
            #expect(d.segments.contains { $0.leases >= 2 }, "the killed worker's segment was leased again")
            #expect(d.segments.allSatisfy { $0.state == .done && $0.worker != victim || $0.state == .done })
            let v = try #require(try MediaProbe.probe(path: farm.output(job)).video)
            #expect(v.frameCount == 629)
        }

        @Test("a RESULT carrying a superseded lease token is rejected (fencing)")
        func staleResultRejected() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            // A hand-driven worker takes the only segment, then goes silent as if it died.
            let fake = try ZMQSocket(.dealer)
            try fake.setRoutingID(Array("ghost#1".utf8))
            try fake.connect(farm.workEndpoint)
            let hello = WorkerHello(name: "ghost", host: "test", pid: 1, threads: 1, stage: "passthrough", version: "test")
            try fake.send(WorkMessage.ready(hello).encode(), wait: true)
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            var task: TaskAssignment?
            let deadline = Date().addingTimeInterval(30)
            while task == nil, Date() < deadline {
                if let frames = try fake.receive(wait: false), case .task(let t) = try WorkMessage.decode(frames) { task = t }
                else { usleep(20_000) }
            }
            let stale = try #require(task)
            // Silence: the coordinator presumes the ghost dead and a real worker redoes the segment.
            try farm.startWorker("real")
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done)
            #expect(d.segments[0].leases == 2)
            // The ghost's late result, with the old token, must change nothing.
            let before = try Data(contentsOf: URL(fileURLWithPath: farm.output(job)))
            let output = try SegmentRenderer.render(input: stale.input, framePTS: stale.framePTS, decodedFrames: stale.decodedFrames,
                                                    outputFrames: stale.outputFrames, frameRate: stale.frameRate, encoder: stale.encoder,
                                                    layout: .yuv420p, processor: PassthroughProcessor(), threads: 1)
            try fake.send(WorkMessage.result(stale.ref, output: output, stats: SegmentStats(frames: output.packets.count)).encode(), wait: true)
            try farm.waitFor("the coordinator to log the rejection", timeout: 10) {
                let tail = farm.tail("coordinator", lines: 200)
                return tail.contains("stale lease token") || tail.contains("rejected a result for job \(job), which is done")
            }
            // The stitched job's results are gone, and the late one did not bring them back.
            let segmentsDir = farm.store.root.appendingPathComponent("jobs/\(job)/segments")
            #expect(!FileManager.default.fileExists(atPath: segmentsDir.path), "\(segmentsDir.path) was recreated")
            let store = farm.db.store()
            try await store.connect()
            let seg = try #require(try await store.segment(SegmentRef(job: JobID(job), index: 0)))
            #expect(seg.state == .done)
            let kept = try await store.results(job: JobID(job))[0]?.token
            #expect(kept != nil && kept != stale.ref.token)
            #expect(try Data(contentsOf: URL(fileURLWithPath: farm.output(job))) == before)
            await store.close()
        }

        @Test("a task carries the dub audio and the source face only to stages that read them")
        func taskInputsFollowTheStage() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            // Hand-driven workers, one per stage: each takes the first segment of its job.
            func firstTask(stage: String) throws -> TaskAssignment {
                let fake = try ZMQSocket(.dealer)
                try fake.setRoutingID(Array("ghost-\(stage)#1".utf8))
                try fake.connect(farm.workEndpoint)
                let hello = WorkerHello(name: "ghost-\(stage)", host: "test", pid: 1, threads: 1, stage: stage, version: "test")
                try fake.send(WorkMessage.ready(hello).encode(), wait: true)
                _ = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), face: media("face-source.png"), stage: stage)
                let deadline = Date().addingTimeInterval(60)
                while Date() < deadline {
                    if let frames = try fake.receive(wait: false), case .task(let t) = try WorkMessage.decode(frames) {
                        _ = try? fake.send(WorkMessage.disconnect(reason: "test done").encode(), wait: false)
                        return t
                    }
                    usleep(20_000)
                }
                throw DubfarmError(.timeout, "no \(stage) task within 60 s")
            }
            let dub = try firstTask(stage: "dub")
            // The segment's frames plus the margin on each side, at 16 kHz.
            let seconds = Double(dub.decodedFrames.count) * Double(dub.frameRate.den) / Double(dub.frameRate.num)
            #expect(Double(dub.audio.samples.count) >= seconds * 16_000)
            #expect(dub.sourceFace?.isEmpty == false)
            let passthrough = try firstTask(stage: "passthrough")
            #expect(passthrough.audio.samples.isEmpty)
            #expect(passthrough.sourceFace == nil)
            #expect(passthrough.input.packets.count >= passthrough.outputFrames.count)
        }

        @Test("SIGKILL the coordinator mid-job: a new one finishes the job without redoing finished segments")
        func coordinatorKilled() async throws {
            let farm = try await TestFarm.start(workers: 1, stage: "sleep")
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
            try farm.waitFor("the first segment done", timeout: 90) { try farm.status(job).segments.contains { $0.state == .done } }
            let doneBefore = Set(try farm.status(job).segments.filter { $0.state == .done }.map(\.index))
            farm.killCoordinator()
            try farm.startCoordinator()
            let d = try farm.wait(job: job)
            #expect(d.job.state == .done, "\(d.job.error ?? "")")
            for s in d.segments where doneBefore.contains(s.index) {
                #expect(s.leases == 1, "segment \(s.index) was finished before the crash and must not be redone")
            }
            #expect(try MediaProbe.probe(path: farm.output(job)).video?.frameCount == 629)
        }
    }
}
