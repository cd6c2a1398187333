import DubfarmCore
import Foundation

/// Micro-benchmarks of the store, for `make bench` (no assertions on time).
public enum StoreBench {
    /// What one run measured.
    public struct Report: Sendable, CustomStringConvertible {
        /// Segment state transitions made (each claim and each completion is one).
        public var transitions: Int
        public var seconds: Double
        public var transitionsPerSecond: Double { seconds > 0 ? Double(transitions) / seconds : 0 }
        public var description: String {
            let rate = Int(transitionsPerSecond.rounded())
            return "\(transitions) segment transitions in \(String(format: "%.3f", seconds)) s: \(rate) transitions/s"
        }
    }

    /// Creates a job of `count / 2` segments (at least 1), then claims and completes every one of
    /// them through `store` on one connection and reports segment transitions per second
    /// (claim `pending → leased` and complete `leased → done`, each with its event).
    public static func transitions(store: FarmStore, count: Int = 2000) async throws -> Report {
        let segments = max(1, count / 2)
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
        var transitions = 0
        while let claimed = try await store.claimSegment(worker: "bench-worker", leaseSeconds: 60) {
            transitions += 1
            guard case .success = try await store.completeSegment(claimed.ref, token: claimed.token, resultBytes: 1,
                                                                  processSeconds: 0) else {
                throw DubfarmError(.internalError, "the benchmark's own result for \(claimed.ref) was rejected")
            }
            transitions += 1
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        try await store.markStitching(job.id, actor: "bench")
        try await store.finishJob(job.id, audioFit: .exact, outputBytes: 0, actor: "bench")
        return Report(transitions: transitions, seconds: seconds)
    }
}
