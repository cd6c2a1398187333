import DubfarmCore
import FarmProtocol
import FarmTestSupport
import Foundation
import LocalFarm
import Testing
@testable import MediaPipeline

/// The checks every fault test ends with: the job is done, every output frame is there exactly
/// once, every segment was accepted exactly once, and only from its current lease.
func expectExactlyOnce(_ farm: TestFarm, job: Int64, frames: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let d = try farm.status(job)
    #expect(d.job.state == .done, "job \(job): \(d.job.state) \(d.job.error ?? "")\n\(farm.tail("coordinator", lines: 40))",
            sourceLocation: sourceLocation)
    guard d.job.state == .done else { return }
    #expect(try MediaProbe.probe(path: farm.output(job)).video?.frameCount == frames, sourceLocation: sourceLocation)
    if let probe = ffprobeCounts(farm.output(job)) { #expect(probe.frames == frames, "ffprobe", sourceLocation: sourceLocation) }
    #expect(d.segments.reduce(0) { $0 + ($1.endFrame - $1.startFrame) } == frames, sourceLocation: sourceLocation)
    let events = try farm.db.events(job: job)
    for s in d.segments {
        let mine = events.filter { $0.segment == s.index }
        let accepted = mine.filter { $0.to == "done" }
        #expect(accepted.count == 1, "segment \(s.index) was accepted \(accepted.count) times", sourceLocation: sourceLocation)
        // The accepted result came from the segment's latest lease: no stale lease was accepted.
        if let done = mine.lastIndex(where: { $0.to == "done" }),
           let lease = mine[..<done].last(where: { $0.to == "leased" }) {
            #expect(mine[done].worker == lease.worker, "segment \(s.index): done by \(mine[done].worker ?? "?"), last leased to \(lease.worker ?? "?")",
                    sourceLocation: sourceLocation)
        }
    }
}

/// Whether `name`'s log shows that it started `segment` of `job` (not just that it was leased in
/// the database: the task may still be on the wire).
func workerStarted(_ farm: TestFarm, _ name: String, job: Int64, segment: Int) -> Bool {
    farm.tail(name, lines: 100_000).split(separator: "\n").contains { line in
        guard line.contains("segment started") else { return false }
        let words = Set(line.split(separator: " ").map(String.init))
        return words.contains("job=\(job)") && words.contains("segment=\(segment)")
    }
}

extension Integration {
    /// Issue 5, "Faults": each fault injected into a real farm, then the exactly-once checks.
    @Suite("Fault injection", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct FaultInjectionTests {
        /// 13 segments of 2 s (50 frames) from speaker-long's 629 frames.
        static let shortSegments = ["DUBFARM_SEGMENTS_SECONDS": "2"]

        @Test("SIGKILL a worker mid-segment three times in one job, on three different segments")
        func workerKilledThreeTimes() async throws {
            let farm = try await TestFarm.start(workers: 2, stage: "sleep", settings: Self.shortSegments)
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
            var killedSegments: [Int] = []
            var next = 3
            for _ in 0..<3 {
                var victim = "", segment = -1
                try farm.waitFor("a worker in the middle of a new segment", timeout: 120) {
                    for s in try farm.status(job).segments where s.state == .leased && !killedSegments.contains(s.index) {
                        if let w = s.worker, farm.workers[w] != nil, workerStarted(farm, w, job: job, segment: s.index) {
                            victim = w
                            segment = s.index
                            return true
                        }
                    }
                    return false
                }
                farm.kill(worker: victim)
                farm.workers[victim] = nil
                killedSegments.append(segment)
                try farm.startWorker("w\(next)", stage: "sleep")
                next += 1
            }
            #expect(Set(killedSegments).count == 3)
            let d = try farm.wait(job: job, timeout: 300)
            for i in killedSegments {
                #expect(d.segments[i].leases >= 2, "segment \(i) was killed mid-way and must have been redone")
                #expect(d.segments[i].failures == 0, "a lost worker is not the segment's failure")
            }
            try expectExactlyOnce(farm, job: job, frames: 629)
        }

        @Test("SIGKILL the coordinator while planning: a new one plans the job again and finishes it")
        func coordinatorKilledPlanning() async throws {
            let farm = try await TestFarm(settings: ["DUBFARM_TEST_PAUSE_PLANNING": "60"])
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("w1")
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"))
            try farm.waitFor("planning half done", timeout: 60) { farm.tail("coordinator", lines: 400).contains("test hook: pausing planning") }
            #expect(try farm.status(job).job.state == .planning)
            farm.killCoordinator()
            farm.environment["DUBFARM_TEST_PAUSE_PLANNING"] = nil
            try farm.startCoordinator()
            try farm.wait(job: job)
            try expectExactlyOnce(farm, job: job, frames: 629)
            #expect(try farm.db.events(job: job).contains { $0.to == "queued" && $0.from == "planning" }, "the interrupted planning is recorded")
        }

        @Test("SIGKILL the coordinator while dispatching: workers keep working and a new coordinator finishes the job")
        func coordinatorKilledDispatching() async throws {
            let farm = try await TestFarm.start(workers: 2, stage: "sleep", settings: Self.shortSegments)
            defer { farm.shutdown() }
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
            try farm.waitFor("segments done and others in flight", timeout: 120) {
                let s = try farm.status(job).segments
                return s.filter { $0.state == .done }.count >= 2 && s.contains { $0.state == .leased }
            }
            let doneBefore = Set(try farm.status(job).segments.filter { $0.state == .done }.map(\.index))
            farm.killCoordinator()
            try farm.startCoordinator()
            let d = try farm.wait(job: job, timeout: 300)
            for s in d.segments where doneBefore.contains(s.index) {
                #expect(s.leases == 1, "segment \(s.index) was finished before the crash and must not be redone")
            }
            try expectExactlyOnce(farm, job: job, frames: 629)
        }

        @Test("SIGKILL the coordinator while stitching: a new one stitches again and the job is done")
        func coordinatorKilledStitching() async throws {
            let farm = try await TestFarm(settings: ["DUBFARM_TEST_PAUSE_STITCHING": "60"])
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("w1")
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"))
            try farm.waitFor("the stitch under way", timeout: 180) { farm.tail("coordinator", lines: 400).contains("test hook: pausing stitching") }
            let before = try farm.status(job)
            #expect(before.job.state == .stitching)
            farm.killCoordinator()
            #expect(!FileManager.default.fileExists(atPath: farm.output(job)))
            farm.environment["DUBFARM_TEST_PAUSE_STITCHING"] = nil
            try farm.startCoordinator()
            let d = try farm.wait(job: job)
            #expect(d.segments.map(\.leases) == before.segments.map(\.leases), "no segment is leased again for the second stitch")
            #expect(try farm.db.events(job: job).filter { $0.to == "stitching" }.count == 1, "the job stays stitching across the restart")
            try expectExactlyOnce(farm, job: job, frames: 629)
        }

        @Test("restart PostgreSQL mid-job: the coordinator waits, reconnects, and the workers keep their segments")
        func postgresRestart() async throws {
            let db = try await TestDatabase.createPrivate()
            defer { db.destroyPrivateCluster() }
            let farm = try await TestFarm(settings: Self.shortSegments.merging(["DUBFARM_WORKERS_LEASE_SECONDS": "30"]) { $1 }, database: db)
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("w1", stage: "sleep", extra: ["--sleep-seconds", "2"])
            try farm.startWorker("w2", stage: "sleep", extra: ["--sleep-seconds", "2"])
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"), stage: "sleep")
            var inFlight: [Int] = []
            try farm.waitFor("segments done and others started on the workers", timeout: 120) {
                let s = try farm.status(job).segments
                inFlight = s.filter { seg in
                    seg.state == .leased && (seg.worker.map { workerStarted(farm, $0, job: job, segment: seg.index) } ?? false)
                }.map(\.index)
                return s.filter { $0.state == .done }.count >= 2 && !inFlight.isEmpty
            }
            try db.cluster.stop()
            // Wait on the coordinator noticing, not on the clock.
            try farm.waitFor("the coordinator to notice the database is gone", timeout: 60) {
                let log = farm.tail("coordinator", lines: 400)
                return log.contains("database unreachable") || log.contains("database connection lost")
            }
            try db.cluster.start()
            let d = try farm.wait(job: job, timeout: 300)
            #expect(farm.tail("coordinator", lines: 2000).contains("database connection restored"))
            for i in inFlight {
                #expect(d.segments[i].failures == 0, "segment \(i) was in flight across the restart")
            }
            #expect(d.segments.allSatisfy { $0.failures == 0 })
            try expectExactlyOnce(farm, job: job, frames: 629)
        }

        @Test("freeze a worker (SIGSTOP) past the liveness limit, then thaw it: its late result is rejected, the redo is kept")
        func frozenWorker() async throws {
            let farm = try await TestFarm()
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("frozen", stage: "sleep", extra: ["--sleep-seconds", "2"])
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), stage: "sleep")
            try farm.waitFor("the segment started on the worker", timeout: 60) { workerStarted(farm, "frozen", job: job, segment: 0) }
            farm.kill(worker: "frozen", signal: SIGSTOP)
            try farm.waitFor("the frozen worker presumed lost", timeout: 60) {
                guard farm.tail("coordinator", lines: 400).contains("worker lost") else { return false }
                return try farm.status(job).segments[0].state == .pending
            }
            // The redo takes long enough that the thawed worker's result arrives while it runs.
            try farm.startWorker("rescuer", stage: "sleep", extra: ["--sleep-seconds", "6"])
            try farm.waitFor("the rescuer working on the segment", timeout: 60) { workerStarted(farm, "rescuer", job: job, segment: 0) }
            farm.kill(worker: "frozen", signal: SIGCONT)
            try farm.waitFor("the late result rejected", timeout: 60) { farm.tail("coordinator", lines: 400).contains("stale lease token") }
            let d = try farm.wait(job: job)
            #expect(d.segments[0].leases == 2)
            #expect(d.segments[0].worker == "rescuer")
            try expectExactlyOnce(farm, job: job, frames: 125)
            let done = try farm.db.events(job: job).filter { $0.to == "done" && $0.segment == 0 }
            #expect(done.map(\.worker) == ["rescuer"])
        }

        @Test("a worker whose stage fails every segment is blocklisted for the job after 3 failures; the job finishes on the other")
        func brokenWorkerBlocklisted() async throws {
            let farm = try await TestFarm(settings: Self.shortSegments.merging(["DUBFARM_RETRY_MAX_ATTEMPTS": "5"]) { $1 })
            defer { farm.shutdown() }
            try farm.startCoordinator()
            try farm.startWorker("broken", stage: "passthrough", extra: ["--test-fail-every-segment"])
            try farm.waitForWorkers(1, "the broken worker connected", timeout: 30)
            let job = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"))
            try farm.waitFor("the broken worker blocklisted", timeout: 120) { try farm.db.workerFailures(job: job)["broken"] == 3 }
            try farm.startWorker("good")
            let d = try farm.wait(job: job, timeout: 300)
            #expect(d.job.state == .done, "\(d.job.error ?? "")")
            #expect(try farm.db.workerFailures(job: job)["broken"] == 3, "a blocklisted worker gets no more of the job's segments")
            let tasks = farm.tail("broken", lines: 100_000).split(separator: "\n").filter { $0.contains("segment started") }.count
            #expect(tasks == 3, "the broken worker took \(tasks) segments")
            #expect(d.segments.allSatisfy { $0.worker == "good" })
            #expect(farm.tail("coordinator", lines: 2000).contains("worker blocklisted for this job"))
            try expectExactlyOnce(farm, job: job, frames: 629)
        }

        @Test("the media store runs out of space during a stitch: the job fails saying so, nothing is left as finished, retry succeeds",
              .enabled(if: getuid() == 0, "needs root to mount a small tmpfs"))
        func diskFullDuringStitch() async throws {
            let farm = try await TestFarm(settings: ["DUBFARM_TEST_PAUSE_STITCHING": "3"])
            defer { farm.shutdown() }
            let store = farm.store.root
            try FileManager.default.createDirectory(at: store, withIntermediateDirectories: true)
            let mount = try ProcessControl.run("/bin/mount", ["-t", "tmpfs", "-o", "size=48m", "tmpfs", store.path], timeout: 30)
            try #require(mount.status == 0, "cannot mount a tmpfs here (\(mount.stderr)); this test needs root and mount rights")
            defer { _ = try? ProcessControl.run("/bin/umount", ["-l", store.path], timeout: 30) }
            try farm.startCoordinator()
            try farm.startWorker("w1")
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            try farm.waitFor("the stitch about to write", timeout: 120) { farm.tail("coordinator", lines: 400).contains("test hook: pausing stitching") }
            // Fill the store's filesystem to the last byte.
            let filler = store.appendingPathComponent("filler")
            let fd = open(filler.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            try #require(fd >= 0)
            let chunk = [UInt8](repeating: 0x5a, count: 1 << 16)
            var size = chunk.count
            while size > 0 {
                if write(fd, chunk, size) < 0 { size /= 2 }
            }
            close(fd)
            let d = try farm.wait(job: job)
            #expect(d.job.state == .failed)
            let reason = d.job.error ?? ""
            #expect(reason.contains("space") || reason.contains("full"), "the reason names the full disk: \(reason)")
            #expect(!FileManager.default.fileExists(atPath: farm.output(job)), "nothing half-written is left as the output")
            let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: store.appendingPathComponent("jobs/\(job)").path)) ?? []
            #expect(!leftovers.contains { $0.hasPrefix("output") }, "no partial output: \(leftovers)")
            try FileManager.default.removeItem(at: filler)
            let retried = try farm.client().call(.retry(job: job), as: JobView.self)
            #expect(retried.state != .failed)
            try farm.wait(job: job)
            try expectExactlyOnce(farm, job: job, frames: 125)
            #expect(try farm.status(job).segments.allSatisfy { $0.leases == 1 }, "retry keeps the finished segments")
        }
    }
}
