import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import Testing

@Suite("Model requirements in the claim")
struct ModelRequirementTests {
    @Test("a job naming a model without a version goes to any version of it; NAME@VERSION only to that version; never to a worker without a model")
    func versionedModels() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let anySmall = try await makeRunningJob(store, segments: 1, stage: "dub", model: "small")
        let exact = try await makeRunningJob(store, segments: 1, stage: "dub", model: "small@abc")
        #expect(try await store.claimSegment(worker: "none", leaseSeconds: 30, stage: "dub", model: nil) == nil)
        #expect(try await store.claimSegment(worker: "paper", leaseSeconds: 30, stage: "dub", model: "paper@abc") == nil)
        #expect(try await store.claimSegment(worker: "smallish", leaseSeconds: 30, stage: "dub", model: "smaller@1") == nil)
        #expect(try await store.claimSegment(worker: "v1", leaseSeconds: 30, stage: "dub", model: "small@v1")?.ref.job == anySmall.id)
        #expect(try await store.claimSegment(worker: "v1", leaseSeconds: 30, stage: "dub", model: "small@v1") == nil,
                "small@v1 does not satisfy small@abc")
        #expect(try await store.claimSegment(worker: "abc", leaseSeconds: 30, stage: "dub", model: "small@abc")?.ref.job == exact.id)
    }

    @Test("the claim chained to a completion applies the same filter")
    func chainedClaim() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let plain = try await makeRunningJob(store, segments: 1, stage: "dub")
        let bound = try await makeRunningJob(store, segments: 1, stage: "dub", model: "paper")
        let s = try #require(try await store.claimSegment(worker: "d", leaseSeconds: 30, stage: "dub", model: "small@x"))
        #expect(s.ref.job == plain.id)
        let (done, next) = try await store.completeSegment(s.ref, token: s.token, resultBytes: 1, processSeconds: 1,
                                                           thenClaimFor: "d", leaseSeconds: 30, stage: "dub", model: "small@x")
        #expect(done.isSuccess)
        #expect(next == nil, "the paper job is not offered to a small worker")
        #expect(try await store.claimSegment(worker: "p", leaseSeconds: 30, stage: "dub", model: "paper@y")?.ref.job == bound.id)
    }
}

@Suite("Batched claims")
struct ClaimBatchTests {
    @Test("claimSegments leases distinct segments in one round trip, honours each worker's capabilities, and returns nil where nothing fits")
    func batch() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(asyncSegmentCommits: true)
        let pass = try await makeRunningJob(store, segments: 3, stage: "passthrough")
        let bound = try await makeRunningJob(store, segments: 1, stage: "dub", model: "paper")
        let claims = try await store.claimSegments([
            .init(worker: "p1", stage: "passthrough"), .init(worker: "p2", stage: "passthrough"),
            .init(worker: "small", stage: "dub", model: "small@1"), .init(worker: "paper", stage: "dub", model: "paper@2"),
            .init(worker: "p3", stage: "passthrough"), .init(worker: "p4", stage: "passthrough"),
        ], leaseSeconds: 30)
        #expect(claims.count == 6)
        #expect(claims[0]?.ref == SegmentRef(job: pass.id, index: 0) && claims[1]?.ref == SegmentRef(job: pass.id, index: 1))
        #expect(claims[2] == nil, "nothing for a small worker")
        #expect(claims[3]?.ref.job == bound.id)
        #expect(claims[4]?.ref == SegmentRef(job: pass.id, index: 2))
        #expect(claims[5] == nil, "the queue is empty")
        let leased = try await store.segments(job: pass.id).map(\.leasedBy)
        #expect(leased == ["p1", "p2", "p3"])
        #expect(try await store.claimSegments([], leaseSeconds: 30).isEmpty)
    }
}
