import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import Testing

/// Creates a running job of `segments` segments whose params name a stage (and a model).
func makeRunningJob(_ store: FarmStore, segments: Int, stage: String, model: String? = nil) async throws -> JobRecord {
    var params = JobParams()
    params.options["stage"] = stage
    if let model { params.options["model"] = model }
    let job = try await store.createJob(NewJob(videoName: "\(stage).mp4", audioName: "dub.wav", params: params))
    try await store.transitionJob(job.id, to: .planning, reason: "test planning")
    let spans = SegmentPlanner.plan(frameCount: segments * 10, segmentFrames: 10)
    return try await store.savePlan(job: job.id, plan: PlannedJob(frameCount: segments * 10, frameRate: Rational(25, 1),
                                                                  width: 320, height: 240, segmentFrames: 10, spans: spans))
}

@Suite("Segment results and capabilities")
struct ResultTests {
    @Test("the completing lease's token and the worker's statistics are kept with the result")
    func recordResultIsFenced() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 1)
        let first = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        _ = try await store.releaseLeases(worker: "w1", reason: "lost")
        let second = try #require(try await store.claimSegment(worker: "w2", leaseSeconds: 30))
        let stats = SegmentStats(frames: 10, framesWithFace: 9, framesSwapped: 0, stageSeconds: 0.5, totalSeconds: 1)
        #expect(!(try await store.completeSegment(first.ref, token: first.token, resultBytes: 1, processSeconds: 1, stats: stats).isSuccess))
        #expect(try await store.results(job: job.id)[0]?.token == nil)
        #expect(try await store.completeSegment(second.ref, token: second.token, resultBytes: 1, processSeconds: 1, stats: stats).isSuccess)
        let results = try await store.results(job: job.id)
        #expect(results[0]?.token == second.token)
        #expect(results[0]?.stats == stats)
        #expect(try await store.framesDone(jobs: [job.id]) == [job.id: 10])
    }

    @Test("a worker is offered only the jobs of its stage, and model-bound jobs only with that model")
    func capabilities() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let dub = try await makeRunningJob(store, segments: 1, stage: "dub")
        let bound = try await makeRunningJob(store, segments: 1, stage: "dub", model: "paper")
        let pass = try await makeRunningJob(store, segments: 1, stage: "passthrough")
        #expect(try await store.claimSegment(worker: "p", leaseSeconds: 30, stage: "passthrough")?.ref.job == pass.id)
        #expect(try await store.claimSegment(worker: "p", leaseSeconds: 30, stage: "passthrough") == nil)
        #expect(try await store.claimSegment(worker: "d", leaseSeconds: 30, stage: "dub", model: "small")?.ref.job == dub.id)
        #expect(try await store.claimSegment(worker: "d", leaseSeconds: 30, stage: "dub", model: "small") == nil)
        #expect(try await store.claimSegment(worker: "q", leaseSeconds: 30, stage: "dub", model: "paper")?.ref.job == bound.id)
    }
}
