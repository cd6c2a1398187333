import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import Testing

/// Creates a job that asks to be personalised and plans it: it is `personalising`, its
/// personalisation `preparing`.
func makePersonalisingJob(_ store: FarmStore, segments: Int = 2, fallback: Bool = false, priority: Int = 0,
                          workers: Int = 1) async throws -> JobRecord {
    var params = JobParams()
    PersonaliseRequest(seconds: 60, fallback: fallback, workers: workers).store(in: &params.options)
    let job = try await store.createJob(NewJob(videoName: "talk.mp4", audioName: "dub.wav", priority: priority, params: params))
    try await store.transitionJob(job.id, to: .planning, reason: "test planning")
    let spans = SegmentPlanner.plan(frameCount: segments * 10, segmentFrames: 10)
    return try await store.savePlan(job: job.id, plan: PlannedJob(frameCount: segments * 10, frameRate: Rational(25, 1), width: 320,
                                                                  height: 240, segmentFrames: 10, spans: spans),
                                    personalise: try PersonaliseRequest(options: params.options))
}

@Suite("Personalisation in the store")
struct PersonalisationStoreTests {
    @Test("a personalised job's segments wait until its weights are in; then they run on them")
    func lifecycle() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord")
        let job = try await makePersonalisingJob(store)
        #expect(job.state == .personalising && job.segmentCount == 2)
        #expect(try await store.personalisationsToPrepare() == [job.id])
        // Nothing to claim: the dataset is not built, and the segments wait for the weights.
        #expect(try await store.claimPersonalisation(worker: "w1", leaseSeconds: 30) == nil)
        #expect(try await store.claimSegment(worker: "w1", leaseSeconds: 30) == nil)
        try await store.personalisationPrepared(job: job.id, frames: 80)
        #expect(try await store.personalisationsToPrepare().isEmpty)
        let claim = try #require(try await store.claimPersonalisation(worker: "w1", leaseSeconds: 30))
        #expect(claim.job == job.id && claim.budgetSeconds == 60 && claim.checkpointStep == nil && claim.attempt == 1)
        #expect(try await store.claimPersonalisation(worker: "w2", leaseSeconds: 30) == nil)
        #expect(try await store.claimSegment(worker: "w2", leaseSeconds: 30) == nil)
        #expect(try await store.reportPersonalisationProgress(job: job.id, token: claim.token, step: 5, loss: 0.5, elapsed: 3))
        #expect(!(try await store.reportPersonalisationProgress(job: job.id, token: .random(), step: 5, loss: 0.5, elapsed: 3)))
        #expect(try await store.recordPersonalisationCheckpoint(job: job.id, token: claim.token, step: 5, elapsed: 3).isSuccess)
        let sha = String(repeating: "ab", count: 32)
        #expect(try await store.completePersonalisation(job: job.id, token: .random(), weights: sha, step: 9, elapsed: 6, report: nil)
            .failureValue == .staleToken(current: claim.token))
        #expect(try await store.completePersonalisation(job: job.id, token: claim.token, weights: sha, step: 9, elapsed: 6,
                                                        report: #"{"holdout": {"psnr_after": 30}}"#).isSuccess)
        let running = try #require(try await store.job(job.id))
        #expect(running.state == .running && running.weights == sha)
        let p = try #require(try await store.personalisation(job: job.id))
        #expect(p.state == .done && p.weights == sha && p.step == 9 && p.report?.contains("psnr_after") == true)
        #expect(try await store.claimSegment(worker: "w2", leaseSeconds: 30) != nil)
        let events = try await store.events(job: job.id)
        #expect(events.map(\.to).contains("personalising") && events.filter { $0.kind == .personalisation }.count >= 3)
    }

    @Test("data-parallel: the claim says how many workers the job asked for; the lease holder's gang is recorded, fenced by its token")
    func gang() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord")
        let job = try await makePersonalisingJob(store, workers: 3)
        try await store.personalisationPrepared(job: job.id, frames: 80)
        let claim = try #require(try await store.claimPersonalisation(worker: "w1", leaseSeconds: 30))
        #expect(claim.workers == 3)
        #expect(!(try await store.recordPersonalisationGang(job: job.id, token: .random(), members: ["w2"])))
        #expect(try await store.recordPersonalisationGang(job: job.id, token: claim.token, members: ["w2", "w3"]))
        var p = try #require(try await store.personalisation(job: job.id))
        #expect(p.workers == 3 && p.worldSize == 3 && p.machine.leasedBy == "w1")
        #expect(try await store.job(job.id)?.stage == "personalising on w1 + 2 more, data-parallel")
        #expect(try await store.events(job: job.id).contains { $0.reason?.contains("training on 3 workers (w1, w2, w3)") == true })
        // A new lease starts alone until its own gang is recorded.
        try await store.releasePersonalisations(worker: "w1", reason: "lost")
        let again = try #require(try await store.claimPersonalisation(worker: "w2", leaseSeconds: 30))
        p = try #require(try await store.personalisation(job: job.id))
        #expect(again.workers == 3 && p.worldSize == 1)
    }

    @Test("a lost worker's lease goes back; the next lease resumes from the checkpoint kept")
    func lostWorker() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord")
        let job = try await makePersonalisingJob(store)
        try await store.personalisationPrepared(job: job.id, frames: 80)
        let first = try #require(try await store.claimPersonalisation(worker: "w1", leaseSeconds: 30))
        #expect(try await store.recordPersonalisationCheckpoint(job: job.id, token: first.token, step: 12, elapsed: 8).isSuccess)
        #expect(try await store.renewPersonalisations(worker: "w1", seconds: 30) == 1)
        #expect(try await store.releasePersonalisations(worker: "w1", reason: "worker w1 lost") == [job.id])
        let second = try #require(try await store.claimPersonalisation(worker: "w2", leaseSeconds: 30))
        #expect(second.checkpointStep == 12 && second.attempt == 2)
        // w1's late checkpoint is refused: it cannot replace w2's.
        #expect(try await store.recordPersonalisationCheckpoint(job: job.id, token: first.token, step: 20, elapsed: 10)
            .failureValue == .staleToken(current: second.token))
        let p = try #require(try await store.personalisation(job: job.id))
        #expect(p.machine.failures == 0 && p.resumedFrom == 12 && p.machine.leasedBy == "w2")
        let events = try await store.events(job: job.id)
        #expect(events.contains { $0.worker == "w2" && ($0.reason ?? "").contains("resumes from the checkpoint of step 12") })
    }

    @Test("an expired lease is taken back")
    func expiry() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord")
        let job = try await makePersonalisingJob(store)
        try await store.personalisationPrepared(job: job.id, frames: 80)
        _ = try #require(try await store.claimPersonalisation(worker: "w1", leaseSeconds: 0.05))
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await store.expirePersonalisations() == [job.id])
        #expect(try await store.personalisation(job: job.id)?.state == .pending)
    }

    @Test("failures retry, then fail the job with the reason, or run it on the default weights")
    func failures() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord")
        for fallback in [false, true] {
            let job = try await makePersonalisingJob(store, fallback: fallback)
            try await store.personalisationPrepared(job: job.id, frames: 80)
            var outcomes: [PersonalisationMachine.FailureOutcome] = []
            for _ in 0..<2 {
                let c = try #require(try await store.claimPersonalisation(worker: "w1", leaseSeconds: 30))
                if case .success(let o) = try await store.failPersonalisation(job: job.id, token: c.token,
                                                                              error: DubfarmError(.internalError, "trainer crashed"), maxAttempts: 2) {
                    outcomes.append(o)
                }
            }
            #expect(outcomes == [.retry, fallback ? .fallBackToDefaultWeights : .failJob])
            let rec = try #require(try await store.job(job.id))
            if fallback {
                #expect(rec.state == .running && rec.weights == nil)
                #expect(try await store.claimSegment(worker: "w1", leaseSeconds: 30) != nil)
            } else {
                #expect(rec.state == .failed && rec.error?.contains("personalisation failed: trainer crashed") == true)
                #expect(rec.segments?.cancelled == 2)
            }
        }
    }

    @Test("a dataset that cannot be built ends it at once; a retried job personalises again")
    func unpreparedAndRetry() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord")
        let job = try await makePersonalisingJob(store)
        #expect(try await store.personalisationUnprepared(job: job.id, error: DubfarmError(.badInput, "talk.mp4: no face")) == .failJob)
        #expect(try await store.job(job.id)?.state == .failed)
        let retried = try await store.retryJob(job.id)
        #expect(retried.state == .personalising)
        #expect(try await store.personalisation(job: job.id)?.state == .preparing)
        #expect(try await store.personalisationsToPrepare() == [job.id])
    }

    @Test("cancelling a personalising job ends its personalisation; the worker's reports are refused")
    func cancel() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord")
        let job = try await makePersonalisingJob(store)
        try await store.personalisationPrepared(job: job.id, frames: 80)
        let c = try #require(try await store.claimPersonalisation(worker: "w1", leaseSeconds: 30))
        try await store.cancelJob(job.id, reason: "cancelled by user")
        #expect(!(try await store.reportPersonalisationProgress(job: job.id, token: c.token, step: 3, loss: nil, elapsed: 1)))
        #expect(try await store.completePersonalisation(job: job.id, token: c.token, weights: String(repeating: "0", count: 64),
                                                        step: 3, elapsed: 1, report: nil).failureValue == .jobNotPersonalising(.cancelled))
        #expect(try await store.personalisation(job: job.id)?.state == .failed)
    }
}
