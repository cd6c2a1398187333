import DubfarmCore
import Foundation

/// Micro-benchmarks of the store, for `make bench` (no assertions on time).
package enum StoreBench {
    /// How the benchmark drives the store.
    package enum Mode: Sendable, Hashable, CustomStringConvertible {
        /// `claimSegment` then `completeSegment`, each an actor call (3 round trips per cycle).
        case calls
        /// `completeSegment(…, thenClaimFor:)`: each result also claims the worker's next segment
        /// (2 round trips per cycle): what a coordinator does when a worker returns a result.
        case chained
        /// ``calls`` from inside the store's actor: no thread hops per call.
        case insideActor

        package var description: String {
            switch self {
            case .calls: return "claim + complete calls"
            case .chained: return "complete-then-claim calls"
            case .insideActor: return "claim + complete inside the actor"
            }
        }
    }

    /// What one run measured.
    package struct Report: Sendable, CustomStringConvertible {
        /// Segment state transitions made (each claim and each completion is one).
        package var transitions: Int
        package var seconds: Double
        /// Of which, claiming (one statement each) and completing (two pipelined round trips each).
        package var claimSeconds: Double
        package var completeSeconds: Double
        package var transitionsPerSecond: Double { seconds > 0 ? Double(transitions) / seconds : 0 }
        package var description: String {
            let rate = Int(transitionsPerSecond.rounded())
            let n = Double(max(1, transitions / 2))
            let head = "\(transitions) segment transitions in \(String(format: "%.3f", seconds)) s: \(rate) transitions/s"
            guard claimSeconds > 0 else { return head }
            return head + " (claim \(String(format: "%.0f", claimSeconds / n * 1e6)) µs, complete \(String(format: "%.0f", completeSeconds / n * 1e6)) µs)"
        }
    }

    /// Creates a job of `count / 2` segments (at least 1), then claims and completes every one of
    /// them through `store` on one connection and reports segment transitions per second
    /// (claim `pending → leased` and complete `leased → done`, each with its event).
    /// Run it on a scratch database: it refuses one with active jobs.
    package static func transitions(store: FarmStore, count: Int = 2000, mode: Mode = .calls) async throws -> Report {
        let segments = max(1, count / 2)
        // It claims whatever is claimable: refuse a database with real work in it.
        let active = try await store.jobs(limit: 1000).filter { !$0.state.isTerminal && $0.submittedBy != "bench" }
        guard active.isEmpty else {
            throw DubfarmError(.badInput,
                               "StoreBench needs a scratch database, but \(active.count) job(s) are active in this one (job \(active[0].id) is \(active[0].state))")
        }
        let job = try await store.createJob(NewJob(videoName: "bench.mp4", audioName: "bench.wav", priority: -1000,
                                                   submittedBy: "bench"))
        guard let planning = try await store.claimQueuedJob(actor: "bench"), planning.id == job.id else {
            throw DubfarmError(.internalError, "the benchmark could not take its own job for planning (another job was queued first)")
        }
        let spans = SegmentPlanner.plan(frameCount: segments * 10, segmentFrames: 10)
        try await store.savePlan(job: job.id, plan: PlannedJob(frameCount: segments * 10, frameRate: Rational(25, 1),
                                                               width: 64, height: 64, segmentFrames: 10, spans: spans),
                                 actor: "bench")
        let start = DispatchTime.now().uptimeNanoseconds
        if mode == .insideActor {
            let n = try await store.drainForBench(worker: "bench-worker")
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            try await store.markStitching(job.id, actor: "bench")
            try await store.finishJob(job.id, audioFit: .exact, outputBytes: 0, actor: "bench")
            return Report(transitions: n, seconds: seconds, claimSeconds: 0, completeSeconds: 0)
        }
        if mode == .chained {
            var transitions = 0
            var current = try await store.claimSegment(worker: "bench-worker", leaseSeconds: 60)
            while let claimed = current {
                transitions += 1
                let (completion, next) = try await store.completeSegment(
                    claimed.ref, token: claimed.token, resultBytes: 1, processSeconds: 0,
                    thenClaimFor: "bench-worker", leaseSeconds: 60)
                guard case .success = completion else {
                    throw DubfarmError(.internalError, "the benchmark's own result for \(claimed.ref) was rejected")
                }
                transitions += 1
                current = next
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            try await store.markStitching(job.id, actor: "bench")
            try await store.finishJob(job.id, audioFit: .exact, outputBytes: 0, actor: "bench")
            return Report(transitions: transitions, seconds: seconds, claimSeconds: 0, completeSeconds: 0)
        }
        var transitions = 0
        var claimNanos: UInt64 = 0, completeNanos: UInt64 = 0
        var t0 = DispatchTime.now().uptimeNanoseconds
        while let claimed = try await store.claimSegment(worker: "bench-worker", leaseSeconds: 60) {
            let t1 = DispatchTime.now().uptimeNanoseconds
            claimNanos += t1 - t0
            transitions += 1
            defer {
                t0 = DispatchTime.now().uptimeNanoseconds
                completeNanos += t0 - t1
            }
            guard case .success = try await store.completeSegment(claimed.ref, token: claimed.token, resultBytes: 1,
                                                                  processSeconds: 0) else {
                throw DubfarmError(.internalError, "the benchmark's own result for \(claimed.ref) was rejected")
            }
            transitions += 1
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        try await store.markStitching(job.id, actor: "bench")
        try await store.finishJob(job.id, audioFit: .exact, outputBytes: 0, actor: "bench")
        return Report(transitions: transitions, seconds: seconds, claimSeconds: Double(claimNanos) / 1e9,
                      completeSeconds: Double(completeNanos) / 1e9)
    }
}

extension FarmStore {
    /// Claims and completes every claimable segment from inside the actor (no executor hops per
    /// call): the database's share of a transition, for ``StoreBench``.
    func drainForBench(worker: String) throws -> Int {
        var n = 0
        while let claimed = try claimSegment(worker: worker, leaseSeconds: 60) {
            guard case .success = try completeSegment(claimed.ref, token: claimed.token, resultBytes: 1, processSeconds: 0) else {
                throw DubfarmError(.internalError, "the benchmark's own result for \(claimed.ref) was rejected")
            }
            n += 2
        }
        return n
    }
}
