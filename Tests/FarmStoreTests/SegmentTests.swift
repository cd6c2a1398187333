import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import Postgres
import Testing

@Suite("Segments")
struct SegmentTests {
    @Test("segments are claimed by job priority, then job age, then index; only of running jobs")
    func claimOrder() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let old = try await makeRunningJob(store, segments: 2, priority: 0)
        let urgent = try await makeRunningJob(store, segments: 2, priority: 10)
        let young = try await makeRunningJob(store, segments: 1, priority: 0)
        _ = try await store.createJob(NewJob(videoName: "queued", audioName: "a", priority: 100))  // not planned
        var order: [SegmentRef] = []
        while let s = try await store.claimSegment(worker: "w", leaseSeconds: 30) { order.append(s.ref) }
        #expect(order == [SegmentRef(job: urgent.id, index: 0), SegmentRef(job: urgent.id, index: 1),
                          SegmentRef(job: old.id, index: 0), SegmentRef(job: old.id, index: 1),
                          SegmentRef(job: young.id, index: 0)])
    }

    @Test("a claim records the lease: token, holder, deadline, attempt, event")
    func claimRecordsLease() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 1)
        let token = LeaseToken.random()
        // An hour, so a machine stalled for seconds between the claim and the check cannot make it look short.
        let s = try #require(try await store.claimSegment(worker: "w9", token: token, leaseSeconds: 3600))
        #expect(s.token == token && s.attempt == 1 && s.failures == 0 && s.frames == 0..<10)
        #expect(s.leaseExpiresAt.timeIntervalSinceNow > 3000)
        let rec = try #require(try await store.segment(s.ref))
        #expect(rec.state == .leased && rec.lease == token && rec.leasedBy == "w9" && rec.leases == 1)
        let ev = try await store.events(job: job.id).last
        #expect(ev?.kind == .segment && ev?.from == "pending" && ev?.to == "leased" && ev?.worker == "w9" && ev?.segment == 0)
    }

    @Test("two stores claiming 200 segments concurrently never share one (SKIP LOCKED)")
    func concurrentClaims() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let setup = db.store()
        let job = try await makeRunningJob(setup, segments: 200)
        let a = db.store(actor: "coord-a"), b = db.store(actor: "coord-b")
        try await a.connect()
        try await b.connect()
        func drain(_ store: FarmStore, _ worker: String) async throws -> [SegmentRef] {
            var got: [SegmentRef] = []
            while let s = try await store.claimSegment(worker: worker, leaseSeconds: 60) { got.append(s.ref) }
            return got
        }
        async let ga = drain(a, "wa")
        async let gb = drain(b, "wb")
        let (x, y) = try await (ga, gb)
        #expect(Set(x).isDisjoint(with: Set(y)))
        #expect(x.count + y.count == 200)
        #expect(Set(x).union(y) == Set((0..<200).map { SegmentRef(job: job.id, index: $0) }))
        let segs = try await setup.segments(job: job.id)
        #expect(segs.allSatisfy { $0.state == .leased && $0.leases == 1 })
        let events = try await setup.events(job: job.id, limit: 10_000).filter { $0.to == "leased" }
        #expect(events.count == 200)
    }

    @Test("concurrent completions from two stores: exactly one sees allDone")
    func exactlyOneAllDone() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let a = db.store(actor: "a"), b = db.store(actor: "b")
        let job = try await makeRunningJob(a, segments: 60)
        var claims: [ClaimedSegment] = []
        while let s = try await a.claimSegment(worker: "w", leaseSeconds: 60) { claims.append(s) }
        #expect(claims.count == 60)
        func complete(_ store: FarmStore, _ list: [ClaimedSegment]) async throws -> Int {
            var n = 0
            for s in list where try await store.completeSegment(s.ref, token: s.token, resultBytes: 1, processSeconds: 0).get().allDone {
                n += 1
            }
            return n
        }
        async let x = complete(a, claims.enumerated().filter { $0.offset % 2 == 0 }.map(\.element))
        async let y = complete(b, claims.enumerated().filter { $0.offset % 2 == 1 }.map(\.element))
        let (na, nb) = try await (x, y)
        #expect(na + nb == 1)
        #expect(try await a.job(job.id)?.segments?.done == 60)
    }

    @Test("fencing: a stale token after release and re-lease is rejected and changes nothing")
    func fencing() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 1)
        let first = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        #expect(try await store.reportProgress(first.ref, token: first.token, framesDone: 4))
        let released = try await store.releaseLeases(worker: "w1", reason: "worker lost")
        #expect(released == [first.ref])
        let second = try #require(try await store.claimSegment(worker: "w2", leaseSeconds: 30))
        #expect(second.ref == first.ref && second.attempt == 2 && second.token != first.token)
        let before = try #require(try await store.segment(first.ref))
        let eventsBefore = try await store.events(job: job.id).count

        let r = try await store.completeSegment(first.ref, token: first.token, resultBytes: 1, processSeconds: 1)
        #expect(r.failureValue == .staleToken(current: second.token))
        let f = try await store.failSegment(first.ref, token: first.token, error: "late")
        #expect(f.failureValue == .staleToken(current: second.token))
        #expect(try await store.reportProgress(first.ref, token: first.token, framesDone: 9) == false)
        let rel = try await store.releaseLease(first.ref, token: first.token, reason: "late")
        #expect(rel.failureValue == .staleToken(current: second.token))

        #expect(try await store.segment(first.ref) == before)
        #expect(try await store.events(job: job.id).count == eventsBefore)
        // The current lease still works.
        let ok = try await store.completeSegment(second.ref, token: second.token, resultBytes: 7, processSeconds: 2)
        #expect(try ok.get() == CompletionOutcome(allDone: true))
        // And a duplicate of the accepted result is rejected.
        #expect(!(try await store.completeSegment(second.ref, token: second.token, resultBytes: 7, processSeconds: 2).isSuccess))
        let done = try #require(try await store.segment(second.ref))
        #expect(done.state == .done && done.resultBytes == 7 && done.framesDone == 10 && done.leasedBy == "w2")
    }

    @Test("failures back off (not_before), then the segment is dead and the job fails with the reason")
    func failuresBackOffThenDie() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 2)
        // A backoff far longer than any stall of a loaded machine; its expiry is simulated below by
        // moving not_before into the past, so the test never depends on wall-clock speed.
        let policy = RetryPolicy(maxAttempts: 3, backoffBase: 600, backoffMax: 600)
        let admin = try PostgresConnection(url: db.url)
        func expireBackoff() throws {
            try admin.query("UPDATE segments SET not_before = now() - interval '1 second' WHERE state = 'pending'")
        }
        let s1 = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        let other = try #require(try await store.claimSegment(worker: "w2", leaseSeconds: 30))
        let out1 = try await store.failSegment(s1.ref, token: s1.token, error: "out of memory", policy: policy).get()
        #expect(out1.segment == .retry(backoffSeconds: 600) && out1.failures == 1 && !out1.jobFailed)
        #expect(out1.worker == "w1" && out1.workerFailuresInJob == 1 && !out1.workerBlocklisted)
        let rec = try #require(try await store.segment(s1.ref))
        #expect(rec.state == .pending && rec.failures == 1 && rec.error == "out of memory" && rec.lease == nil)
        #expect(try #require(rec.notBefore).timeIntervalSinceNow > 500)
        // Backing off: not claimable yet.
        #expect(try await store.claimSegment(worker: "w3", leaseSeconds: 30) == nil)
        try expireBackoff()
        let s2 = try #require(try await store.claimSegment(worker: "w3", leaseSeconds: 30))
        #expect(s2.ref == s1.ref && s2.failures == 1 && s2.attempt == 2)
        _ = try await store.failSegment(s2.ref, token: s2.token, error: "out of memory", policy: policy).get()
        #expect(try await store.claimSegment(worker: "w4", leaseSeconds: 30) == nil)
        try expireBackoff()
        let s3 = try #require(try await store.claimSegment(worker: "w4", leaseSeconds: 30))
        let out3 = try await store.failSegment(s3.ref, token: s3.token, error: "bad frame 12", code: .badInput,
                                               policy: policy).get()
        #expect(out3.segment == .dead && out3.jobFailed)
        #expect(out3.cancelledLeases == [LeasedSegment(ref: other.ref, token: other.token, worker: "w2")])
        let failed = try #require(try await store.job(job.id))
        #expect(failed.state == .failed && failed.error == "segment 0: bad frame 12" && failed.errorCode == .badInput)
        let jobEvent = try await store.events(job: job.id).last { $0.kind == .job }
        #expect(jobEvent?.to == "failed" && jobEvent?.reason == "segment 0: bad frame 12")
        let segs = try await store.segments(job: job.id)
        #expect(segs.map(\.state) == [.dead, .cancelled])
    }

    @Test("a failure for unusable input (badInput) is not retried: dead at once, the job fails, the worker is not blamed")
    func unusableInputIsNotRetried() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 2)
        let policy = RetryPolicy(maxAttempts: 3, backoffBase: 600, backoffMax: 600)
        let s = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 3600))
        let out = try await store.failSegment(s.ref, token: s.token, error: "source frame 59 is damaged", code: .badInput,
                                              policy: policy).get()
        #expect(out.segment == .dead && out.failures == 1 && out.jobFailed)
        #expect(out.workerFailuresInJob == 0 && !out.workerBlocklisted)
        let failed = try #require(try await store.job(job.id))
        #expect(failed.state == .failed && failed.errorCode == .badInput && failed.error == "segment 0: source frame 59 is damaged")
        let event = try await store.events(job: job.id).last { $0.kind == .segment && $0.to == "dead" }
        #expect(event?.reason == "failed (unusable input, not retried): source frame 59 is damaged")
    }

    @Test("a batch of completions in one commit: each fenced on its own, exactly one sees its job all done, chained claims per worker")
    func batchedCompletions() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 2)
        let s0 = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 3600))
        let s1 = try #require(try await store.claimSegment(worker: "w2", leaseSeconds: 3600))
        let other = try await makeRunningJob(store, segments: 1)
        let replies = try await store.completeSegments([
            .init(ref: s0.ref, token: s0.token, resultBytes: 10, resultOffset: 4096, processSeconds: 1,
                  thenClaim: .init(worker: "w1")),
            .init(ref: s1.ref, token: .random(), resultBytes: 10, processSeconds: 1),  // not its lease
            .init(ref: s1.ref, token: s1.token, resultBytes: 20, processSeconds: 2, stats: SegmentStats(frames: 10),
                  thenClaim: .init(worker: "w2")),
        ], leaseSeconds: 3600)
        #expect(replies.count == 3)
        #expect(try replies[0].completion.get() == CompletionOutcome(allDone: false))
        #expect(throws: SegmentStateMachine.Rejection.self) { try replies[1].completion.get() }
        #expect(try replies[2].completion.get() == CompletionOutcome(allDone: true))
        // w1 got the other job's segment; nothing was left for w2.
        #expect(replies[0].next?.ref.job == other.id && replies[0].next?.worker == "w1")
        #expect(replies[2].next == nil)
        let segs = try await store.segments(job: job.id)
        #expect(segs.map(\.state) == [.done, .done])
        let results = try await store.results(job: job.id)
        #expect(results[1]?.token == s1.token && results[1]?.offset == nil && results[1]?.bytes == 20)
        // Where the result lies in the job's result log.
        #expect(results[0]?.token == s0.token && results[0]?.offset == 4096 && results[0]?.bytes == 10)
        let done = try await store.events(job: job.id).filter { $0.kind == .segment && $0.to == "done" }
        #expect(done.count == 2)
        #expect(try await store.completeSegments([], leaseSeconds: 1).isEmpty)
    }

    @Test("a worker that fails three segments of a job gets no more of that job")
    func blocklist() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 5)
        let other = try await makeRunningJob(store, segments: 1)
        let policy = RetryPolicy(maxAttempts: 10, backoffBase: 0, backoffMax: 0)
        var last: FailureOutcome?
        for _ in 0..<3 {
            let s = try #require(try await store.claimSegment(worker: "bad", leaseSeconds: 30))
            #expect(s.ref.job == job.id)
            last = try await store.failSegment(s.ref, token: s.token, error: "gpu fault", policy: policy).get()
        }
        #expect(last?.workerBlocklisted == true && last?.workerFailuresInJob == 3)
        // "bad" now skips job 1 and gets the other job's segment; a good worker still gets job 1.
        #expect(try await store.claimSegment(worker: "bad", leaseSeconds: 30)?.ref.job == other.id)
        #expect(try await store.claimSegment(worker: "bad", leaseSeconds: 30) == nil)
        #expect(try await store.claimSegment(worker: "good", leaseSeconds: 30)?.ref.job == job.id)
    }

    @Test("expired leases are taken back without counting a failure")
    func expiry() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 2)
        let short = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 0.3))
        let long = try #require(try await store.claimSegment(worker: "w2", leaseSeconds: 3600))
        try await Task.sleep(nanoseconds: 500_000_000)
        #expect(try await store.expireLeases() == [short.ref])
        #expect(try await store.expireLeases().isEmpty)
        let rec = try #require(try await store.segment(short.ref))
        #expect(rec.state == .pending && rec.failures == 0 && rec.lease == nil && rec.leaseExpiresAt == nil)
        #expect(try await store.segment(long.ref)?.state == .leased)
        let ev = try await store.events(job: job.id).last
        #expect(ev?.reason == "lease expired" && ev?.from == "leased" && ev?.to == "pending" && ev?.worker == "w1")
        // Renewal keeps a lease alive.
        let again = try #require(try await store.claimSegment(worker: "w3", leaseSeconds: 0.3))
        #expect(try await store.renewLeases(worker: "w3", seconds: 3600) == 1)
        try await Task.sleep(nanoseconds: 500_000_000)
        #expect(try await store.expireLeases().isEmpty)
        #expect(try await store.segment(again.ref)?.state == .leased)
    }

    @Test("a handed-back lease is pending again; progress is recorded under the current token only")
    func handBackAndProgress() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        _ = try await makeRunningJob(store, segments: 1)
        let s = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        #expect(try await store.reportProgress(s.ref, token: s.token, framesDone: 6))
        #expect(try await store.segment(s.ref)?.framesDone == 6)
        #expect(try await store.reportProgress(s.ref, token: .random(), framesDone: 8) == false)
        #expect(try await store.releaseLease(s.ref, token: s.token, reason: "draining").isSuccess)
        let rec = try #require(try await store.segment(s.ref))
        #expect(rec.state == .pending && rec.framesDone == 0 && rec.failures == 0)
        #expect(try await store.releaseLease(s.ref, token: s.token, reason: "twice").failureValue != nil)
    }

    @Test("workers are upserted, their state changes recorded, counters kept")
    func workers() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        try await store.workerSeen(WorkerInfo(name: "w1", host: "gpu-1", threads: 8, model: "tiny",
                                              capabilities: ["gpu": "none"]))
        try await store.workerSeen(WorkerInfo(name: "w1", host: "gpu-1", threads: 16, model: "tiny"))
        let job = try await makeRunningJob(store, segments: 1)
        let s = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        try await store.setWorkerState("w1", .busy, segment: s.ref, stage: "lipsync")
        var w = try #require(try await store.workers().first)
        #expect(w.name == "w1" && w.threads == 16 && w.state == .busy && w.current == s.ref && w.stage == "lipsync")
        _ = try await store.completeSegment(s.ref, token: s.token, resultBytes: 1, processSeconds: 1)
        try await store.setWorkerState("w1", .idle)
        try await store.setWorkerState("w1", .gone, reason: "disconnected")
        try await store.workerSeen(WorkerInfo(name: "w1"))
        w = try #require(try await store.workers().first)
        #expect(w.state == .idle && w.segmentsDone == 1 && w.framesDone == 10 && w.current == nil)
        let ev = try await store.events().filter { $0.kind == .worker }.map { "\($0.from ?? "-")>\($0.to ?? "-")" }
        #expect(ev == ["->idle", "idle>busy", "busy>idle", "idle>gone", "gone>idle"])
        await #expect(throws: DubfarmError.self) { try await store.setWorkerState("nobody", .idle) }
        _ = job
    }

    @Test("segments becoming claimable raise the dubfarm_work hint")
    func workHint() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let listener = WorkListener(url: db.url)
        try await listener.start()
        let store = db.store()
        _ = try await makeRunningJob(store, segments: 1)
        #expect(try await listener.wait(timeout: 5))
        #expect(try await listener.wait(timeout: 0.1) == false)
    }

    @Test("store benchmark: claim + complete cycles (prints transitions/s)", .serialized, arguments: [false, true])
    func bench(asyncCommits: Bool) async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(asyncSegmentCommits: asyncCommits)
        let label = "\(ProcessInfo.processInfo.environment["DUBFARM_TEST_PG_DURABLE"] == "1" ? "durable" : "ephemeral (fsync off)") cluster, asyncSegmentCommits: \(asyncCommits)"
        for mode in [StoreBench.Mode.calls, .chained, .insideActor] {
            let report = try await StoreBench.transitions(store: store, count: 2000, mode: mode)
            print("StoreBench.transitions [\(label)], \(mode): \(report)")
            #expect(report.transitions == 2000)
        }
    }

    @Test("complete-then-claim: the result is committed and the worker gets the next segment")
    func completeThenClaim() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 2)
        let first = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        let (c1, n1) = try await store.completeSegment(first.ref, token: first.token, resultBytes: 5, processSeconds: 1,
                                                       thenClaimFor: "w1", leaseSeconds: 30)
        #expect(try c1.get() == CompletionOutcome(allDone: false))
        let second = try #require(n1)
        #expect(second.ref == SegmentRef(job: job.id, index: 1) && second.worker == "w1")
        // A stale result is rejected, and the worker still gets work if there is any (none here).
        let (c2, n2) = try await store.completeSegment(first.ref, token: first.token, resultBytes: 5, processSeconds: 1,
                                                       thenClaimFor: "w1", leaseSeconds: 30)
        #expect(c2.failureValue != nil && n2 == nil)
        let (c3, n3) = try await store.completeSegment(second.ref, token: second.token, resultBytes: 5, processSeconds: 1,
                                                       thenClaimFor: "w1", leaseSeconds: 30)
        #expect(try c3.get().allDone && n3 == nil)
        #expect(try await store.segments(job: job.id).allSatisfy { $0.state == .done })
    }

    @Test("a partial result: the segment keeps the frames returned and is done, the rest is a new pending segment after the job's last; a stale one changes nothing")
    func partialResult() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 3)  // 0..<10, 10..<20, 20..<30
        _ = try #require(try await store.claimSegment(worker: "w0", leaseSeconds: 60))
        let s = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 60))
        #expect(s.ref.index == 1)
        // A stale token: refused, nothing changes.
        let stale = try await store.completePartially(s.ref, token: .random(), frames: 4, resultBytes: 10, resultOffset: 0,
                                                      processSeconds: 1, stats: nil)
        #expect(stale.failureValue != nil)
        #expect(try await store.segments(job: job.id).count == 3)
        // None or all of the frames is not a partial result.
        for frames in [0, 10] {
            await #expect(throws: DubfarmError.self) {
                _ = try await store.completePartially(s.ref, token: s.token, frames: frames, resultBytes: 10, resultOffset: 0,
                                                      processSeconds: 1, stats: nil)
            }
        }
        let outcome = try #require(try await store.completePartially(s.ref, token: s.token, frames: 4, resultBytes: 123, resultOffset: 77,
                                                                     processSeconds: 2, stats: SegmentStats(frames: 4)).get())
        #expect(outcome.finished == 10..<14 && outcome.remainder == SegmentRef(job: job.id, index: 3) && outcome.remainderFrames == 14..<20)
        let segments = try await store.segments(job: job.id)
        #expect(segments.map(\.ref.index) == [0, 1, 3, 2], "in the video's order")
        #expect(segments.map(\.frames) == [0..<10, 10..<14, 14..<20, 20..<30])
        #expect(segments[1].state == .done && segments[1].framesTotal == 4 && segments[1].framesDone == 4 && segments[1].resultBytes == 123)
        #expect(segments[2].state == .pending && segments[2].framesTotal == 6 && segments[2].leases == 0)
        #expect(try await store.results(job: job.id)[1]?.offset == 77)
        #expect(try await store.job(job.id)?.segmentCount == 4)
        let events = try await store.events(job: job.id).suffix(2)
        #expect(events.first?.reason?.hasPrefix("partial: w1 stopped after frames 10..<14 of 10..<20; frames 14..<20 are segment 3") == true)
        #expect(events.last?.segment == 3 && events.last?.to == "pending")
        // The same lease again: it is no longer current.
        let again = try await store.completePartially(s.ref, token: s.token, frames: 2, resultBytes: 1, resultOffset: 0, processSeconds: 1, stats: nil)
        #expect(again.failureValue != nil)
        // The remainder is claimed like any segment (after segment 2, by index) and finishing everything finishes the job.
        let next = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 60))
        #expect(next.ref.index == 2)
        let last = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 60))
        #expect(last.ref.index == 3 && last.frames == 14..<20)
    }

    @Test("re-planning a retried job keeps segments split by partial results, and their finished work")
    func replanKeepsSplitSegments() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 2)
        let s = try #require(try await store.claimSegment(worker: "w", leaseSeconds: 60))
        _ = try await store.completePartially(s.ref, token: s.token, frames: 3, resultBytes: 1, resultOffset: 0, processSeconds: 1, stats: nil)
        try await store.transitionJob(job.id, to: .failed, reason: "test")
        try await store.transitionJob(job.id, to: .queued, reason: "retry")
        try await store.transitionJob(job.id, to: .planning, reason: "test planning")
        let spans = SegmentPlanner.plan(frameCount: 20, segmentFrames: 10)
        let record = try await store.savePlan(job: job.id, plan: PlannedJob(frameCount: 20, frameRate: Rational(25, 1), width: 320, height: 240,
                                                                          segmentFrames: 10, spans: spans))
        #expect(record.segmentCount == 3)
        let segments = try await store.segments(job: job.id)
        #expect(segments.map(\.frames) == [0..<3, 3..<10, 10..<20])
        #expect(segments[0].state == .done)
    }
}
