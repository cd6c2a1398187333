import DubfarmCore
import FarmClient
import FarmProtocol
import Foundation
import LocalFarm
import Synchronization
import Testing
import ZeroMQ

/// A process's memory from /proc/PID/status: resident now (VmRSS) and peak (VmHWM), bytes.
func processMemory(_ pid: Int32) -> (rss: Int, peak: Int) {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Int {
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb * 1024
    }
    return (field("VmRSS"), field("VmHWM"))
}

/// Counters shared by flooding threads.
final class FloodCounters: Sendable {
    let requests = Atomic<Int>(0)
    let busy = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let running = Atomic<Int>(0)
}

extension Integration {
    @Suite("Protocol and load", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct LoadTests {
        @Test("a control flood (4 threads hammering jobs and status) does not stall dispatch: the job completes")
        func controlFlood() async throws {
            // 10-frame segments: speaker-long becomes 63 segments, so dispatch runs all through the flood.
            let farm = try await TestFarm.start(workers: 2, settings: ["DUBFARM_SEGMENTS_SECONDS": "0.4"])
            defer { farm.shutdown() }
            let clock = ContinuousClock()
            let t0 = clock.now
            let quiet = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"))
            let q = try farm.wait(job: quiet, timeout: 600)
            #expect(q.job.state == .done)
            let quietTime = clock.now - t0

            let counters = FloodCounters()
            let endpoint = farm.controlEndpoint
            let threads = (0..<4).map { n in
                Thread {
                    counters.running.add(1, ordering: .relaxed)
                    defer { counters.running.subtract(1, ordering: .relaxed) }
                    guard let c = try? ControlClient(endpoint: endpoint, timeout: 60) else { return }
                    var i = 0
                    while !counters.stop.load(ordering: .relaxed) {
                        i += 1
                        do {
                            if (i + n) % 2 == 0 { _ = try c.call(.jobs(JobsQuery(limit: 100))) } else { _ = try c.call(.status(job: quiet)) }
                        } catch let e as DubfarmError where e.message.contains("busy") {
                            counters.busy.add(1, ordering: .relaxed)
                        } catch {
                            counters.errors.add(1, ordering: .relaxed)
                        }
                        counters.requests.add(1, ordering: .relaxed)
                    }
                }
            }
            threads.forEach { $0.start() }
            defer {
                counters.stop.store(true, ordering: .relaxed)
                while counters.running.load(ordering: .relaxed) > 0 { usleep(10_000) }
            }
            try farm.waitFor("the flood to start", timeout: 60) { counters.requests.load(ordering: .relaxed) >= 20 }
            let t1 = clock.now
            let before = counters.requests.load(ordering: .relaxed)
            let flooded = try farm.submit(media("speaker-long.mp4"), audio: media("dub-long.wav"))
            // Dispatch keeps going: segments complete while the flood runs (checked on a real signal,
            // the segments done count, not on time).
            var lastDone = 0, advances = 0
            try farm.waitFor("segments to complete under the flood", timeout: 600) {
                let s = try farm.status(flooded)
                let done = s.segments.filter { $0.state == .done }.count
                if done > lastDone { advances += 1; lastDone = done }
                return [.done, .failed, .cancelled].contains(s.job.state)
            }
            let floodTime = clock.now - t1
            let sent = counters.requests.load(ordering: .relaxed) - before
            counters.stop.store(true, ordering: .relaxed)
            let d = try farm.status(flooded)
            #expect(d.job.state == .done, "\(d.job.error ?? "")")
            #expect(d.segments.count == 63)
            #expect(advances >= 2, "segments were completed one after another while the flood ran")
            #expect(sent >= 100, "the flood was real: \(sent) requests")
            #expect(counters.errors.load(ordering: .relaxed) == 0, "control requests failed other than busy")
            let secs = { (d: Duration) in Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
            print("""
                control flood: 63-segment job \(String(format: "%.1f", secs(quietTime))) s alone, \
                \(String(format: "%.1f", secs(floodTime))) s under \(sent) control requests from 4 threads \
                (\(Int(Double(sent) / max(secs(floodTime), 0.001))) requests/s, \(counters.busy.load(ordering: .relaxed)) answered busy)
                """)
        }

        @Test("messages above limits.max_message_bytes are dropped by the coordinator's sockets; it keeps serving")
        func oversizedMessages() async throws {
            let farm = try await TestFarm.start(workers: 1, settings: ["DUBFARM_LIMITS_MAX_MESSAGE_BYTES": String(4 << 20)])
            defer { farm.shutdown() }
            // 16 MiB at both endpoints, valid protocol framing but far too big: libzmq refuses them
            // while reading (ZMQ_MAXMSGSIZE) and drops the sender's connection.
            let huge = [UInt8](repeating: 0x41, count: 16 << 20)
            let rogueWorker = try ZMQSocket(.dealer)
            try rogueWorker.connect(farm.workEndpoint)
            try rogueWorker.send([Array(ProtocolName.work.utf8), Array("READY".utf8), huge], wait: true)
            let rogueClient = try ZMQSocket(.dealer)
            try rogueClient.connect(farm.controlEndpoint)
            try rogueClient.send([Array(ProtocolName.control.utf8), [0, 0, 0, 0, 0, 0, 0, 1], Array("UPLOAD-CHUNK".utf8), Array("{}".utf8), huge], wait: true)
            // The farm is unaffected: a job completes and only the real worker is known.
            let job = try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"))
            #expect(try farm.wait(job: job).job.state == .done)
            #expect(try farm.client().call(.workers, as: [WorkerView].self).map(\.name) == ["w1"])
            #expect(ProcessControl.isAlive(farm.coordinatorPID))
        }

        @Test("50 jobs submitted at once all complete, higher priority first; the coordinator's memory stays flat")
        func fiftyJobs() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            // Warm-up: 5 jobs, then the coordinator's resident memory is the baseline.
            let warm = try (0..<5).map { _ in try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav")) }
            try farm.startWorker("warm")
            for j in warm { #expect(try farm.wait(job: j).job.state == .done) }
            let afterFive = processMemory(farm.coordinatorPID)
            farm.kill(worker: "warm", signal: SIGTERM)
            try farm.waitFor("no worker connected", timeout: 60) { try farm.client().call(.workers, as: [WorkerView].self).isEmpty }

            // 50 jobs, priorities 0…4 interleaved, all queued and planned before any worker is there.
            var priority: [Int64: Int] = [:]
            for i in 0..<50 {
                let p = (i * 3) % 5
                priority[try farm.submit(media("speaker-c.mp4"), audio: media("dub-1.wav"), priority: p)] = p
            }
            try farm.waitFor("all 50 planned", timeout: 600) {
                try farm.client().call(.jobs(JobsQuery(state: .running, limit: 1000)), as: [JobView].self).count == 50
            }
            try farm.startWorker("w1")
            for j in priority.keys { #expect(try farm.wait(job: j, timeout: 900).job.state == .done) }
            let afterFifty = processMemory(farm.coordinatorPID)

            // The order segments were completed in (one worker: claims and completions in order).
            let events = try farm.client().call(.events(EventsQuery(job: nil, after: 0, limit: 10_000)), as: [EventView].self)
            let completed = events.filter { $0.kind == "segment" && $0.to == "done" }.compactMap { e in e.job.flatMap { priority[$0] } }
            #expect(completed.count == 50)
            #expect(completed == completed.sorted(by: >), "segments completed in priority order: \(completed)")
            // Jobs finished (stitched) in priority order too: by group, allowing stitches that overlap.
            let jobs = try farm.client().call(.jobs(JobsQuery(limit: 1000)), as: [JobView].self).filter { priority[$0.id] != nil }
            let byFinish = jobs.sorted { ($0.finishedAt ?? .distantFuture) < ($1.finishedAt ?? .distantFuture) }.map { priority[$0.id]! }
            let meanRank = (0..<5).map { p in
                Double(byFinish.enumerated().filter { $0.element == p }.map(\.offset).reduce(0, +)) / 10
            }
            #expect(meanRank == meanRank.sorted(by: >), "mean finish rank by priority 0…4: \(meanRank)")
            #expect(Array(byFinish.prefix(5)).allSatisfy { $0 == 4 }, "the first jobs to finish have the highest priority: \(byFinish)")
            #expect(Array(byFinish.suffix(5)).allSatisfy { $0 == 0 }, "the last have the lowest: \(byFinish)")

            print("""
                50 jobs: coordinator resident \(afterFive.rss >> 20) MiB after 5 jobs, \(afterFifty.rss >> 20) MiB after 55; \
                peak (VmHWM) \(afterFifty.peak >> 20) MiB
                """)
            // Flat: generous, since allocator arenas and PostgreSQL client buffers settle over time.
            #expect(afterFifty.rss <= afterFive.rss * 3 / 2 + (64 << 20),
                    "resident memory grew from \(afterFive.rss >> 20) MiB to \(afterFifty.rss >> 20) MiB")
        }
    }
}
