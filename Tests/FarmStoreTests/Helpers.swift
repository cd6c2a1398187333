import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation

/// Creates a job, takes it for planning and saves a plan of `segments` segments of 10 frames.
@discardableResult
func makeRunningJob(_ store: FarmStore, segments: Int, priority: Int = 0, name: String = "in.mp4") async throws -> JobRecord {
    let job = try await store.createJob(NewJob(videoName: name, audioName: "dub.wav", priority: priority))
    // Plan exactly this job even if others are queued: move it through planning directly.
    try await store.transitionJob(job.id, to: .planning, reason: "test planning")
    let spans = SegmentPlanner.plan(frameCount: segments * 10, segmentFrames: 10)
    return try await store.savePlan(job: job.id, plan: PlannedJob(frameCount: segments * 10, frameRate: Rational(25, 1),
                                                                  width: 320, height: 240, segmentFrames: 10, spans: spans))
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { return true }
        return false
    }
    var failureValue: Failure? {
        if case .failure(let f) = self { return f }
        return nil
    }
}
