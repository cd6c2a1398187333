import DubfarmCore
import FarmStore
import FarmTestSupport
import Foundation
import Postgres
import Testing

@Suite("Jobs")
struct JobTests {
    @Test("a job's whole life, with an event for every transition")
    func lifecycle() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store(actor: "coord-1")
        var params = JobParams()
        params.options["model"] = "tiny"
        let job = try await store.createJob(NewJob(videoName: "in.mp4", audioName: "dub.wav", faceName: "face.png",
                                                   params: params, submittedBy: "alice"))
        #expect(job.state == .queued && job.faceName == "face.png" && job.params == params && !job.isPlanned)
        let planning = try #require(try await store.claimQueuedJob())
        #expect(planning.id == job.id && planning.state == .planning && planning.coordinator == "coord-1")
        #expect(try await store.claimQueuedJob() == nil)
        let spans = SegmentPlanner.plan(frameCount: 25, segmentFrames: 10)
        let running = try await store.savePlan(job: job.id, plan: PlannedJob(
            frameCount: 25, frameRate: Rational(30000, 1001), width: 640, height: 360, rotation: 90,
            segmentFrames: 10, spans: spans, planData: #"{"keyframes": [0, 12]}"#))
        #expect(running.state == .running && running.frameRate == Rational(30000, 1001) && running.rotation == 90)
        #expect(running.segmentCount == 3 && running.segments?.pending == 3 && running.startedAt != nil)
        #expect(running.planData?.contains("keyframes") == true)
        let segs = try await store.segments(job: job.id)
        #expect(segs.map(\.frames) == [0..<10, 10..<20, 20..<25])
        #expect(segs.map(\.framesTotal) == [10, 10, 5])

        await #expect(throws: DubfarmError.self) { try await store.markStitching(job.id) }
        for _ in 0..<3 {
            let s = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
            let r = try await store.completeSegment(s.ref, token: s.token, resultBytes: 100, processSeconds: 1.5)
            #expect(r.isSuccess)
        }
        try await store.markStitching(job.id)
        let done = try await store.finishJob(job.id, audioFit: .padded(seconds: 0.25), outputBytes: 300)
        #expect(done.state == .done && done.audioFit == .padded(seconds: 0.25) && done.outputBytes == 300)
        #expect(done.finishedAt != nil && done.segments?.done == 3)

        let jobEvents = try await store.events(job: job.id).filter { $0.kind == .job }
        #expect(jobEvents.map(\.to) == ["queued", "planning", "running", "stitching", "done"])
        #expect(jobEvents.map(\.from) == [nil, "queued", "planning", "running", "stitching"])
        #expect(jobEvents.first?.actor == "alice" && jobEvents[1].actor == "coord-1")
        let segEvents = try await store.events(job: job.id).filter { $0.kind == .segment }
        #expect(segEvents.count == 6)
        #expect(segEvents.allSatisfy { $0.worker == "w1" })
        // Following the log.
        let all = try await store.events(job: job.id)
        #expect(try await store.events(job: job.id, afterID: all[4].id).count == all.count - 5)
    }

    @Test("a generic transition keeps segments consistent: stitching needs all done, failed cancels")
    func genericTransitions() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 2)
        await #expect(throws: DubfarmError.self) { try await store.transitionJob(job.id, to: .stitching, reason: "too early") }
        let failed = try await store.transitionJob(job.id, to: .failed, reason: "operator",
                                                   error: DubfarmError(.badInput, "video is corrupt"))
        #expect(failed.state == .failed && failed.error == "video is corrupt" && failed.errorCode == .badInput)
        #expect(failed.segments?.cancelled == 2)
        #expect(try await store.claimSegment(worker: "w", leaseSeconds: 30) == nil)
    }

    @Test("raising a job's priority moves its segments ahead in the claim order")
    func priorityChange() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let first = try await makeRunningJob(store, segments: 2)
        let second = try await makeRunningJob(store, segments: 2)
        #expect(try await store.claimSegment(worker: "w", leaseSeconds: 30)?.ref.job == first.id)
        try await store.setJobPriority(second.id, 7)
        #expect(try await store.job(second.id)?.priority == 7)
        #expect(try await store.claimSegment(worker: "w", leaseSeconds: 30)?.ref.job == second.id)
    }

    @Test("illegal job transitions are refused and change nothing")
    func illegalTransitions() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await store.createJob(NewJob(videoName: "a", audioName: "b"))
        await #expect(throws: DubfarmError.self) { try await store.transitionJob(job.id, to: .stitching, reason: "x") }
        await #expect(throws: DubfarmError.self) { try await store.finishJob(job.id, audioFit: .exact, outputBytes: 1) }
        #expect(try await store.job(job.id)?.state == .queued)
        #expect(try await store.events(job: job.id).count == 1)
        await #expect(throws: DubfarmError.self) { try await store.transitionJob(JobID(999_999), to: .planning, reason: "x") }
        #expect(try await store.job(JobID(999_999)) == nil)
    }

    @Test("queued jobs are claimed by priority, then age")
    func claimOrder() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let low = try await store.createJob(NewJob(videoName: "low", audioName: "a", priority: 0))
        let high1 = try await store.createJob(NewJob(videoName: "high1", audioName: "a", priority: 5))
        let high2 = try await store.createJob(NewJob(videoName: "high2", audioName: "a", priority: 5))
        let mid = try await store.createJob(NewJob(videoName: "mid", audioName: "a", priority: 1))
        var order: [JobID] = []
        while let j = try await store.claimQueuedJob() { order.append(j.id) }
        #expect(order == [high1.id, high2.id, mid.id, low.id])
        #expect(try await store.jobs(state: .planning).count == 4)
        #expect(try await store.jobs().map(\.id) == [mid.id, high2.id, high1.id, low.id])
    }

    @Test("failJob records the reason and code, cancels segments, returns active leases")
    func failJob() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 3)
        let s = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        let leases = try await store.failJob(job.id, code: .stitch, message: "stitched output has 24 frames, expected 25")
        #expect(leases == [LeasedSegment(ref: s.ref, token: s.token, worker: "w1")])
        let failed = try #require(try await store.job(job.id))
        #expect(failed.state == .failed && failed.errorCode == .stitch && failed.error?.contains("24 frames") == true)
        #expect(failed.segments?.cancelled == 3)
        #expect(try await store.completeSegment(s.ref, token: s.token, resultBytes: 1, processSeconds: 1).failureValue
            == .wrongState(.cancelled))
    }

    @Test("cancel returns the active leases; the workers' late replies are rejected")
    func cancel() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 4)
        let a = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        let b = try #require(try await store.claimSegment(worker: "w2", leaseSeconds: 30))
        _ = try await store.completeSegment(a.ref, token: a.token, resultBytes: 1, processSeconds: 1)
        let c = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        let leases = try await store.cancelJob(job.id, reason: "user asked", actor: "alice")
        #expect(Set(leases) == [LeasedSegment(ref: b.ref, token: b.token, worker: "w2"),
                                LeasedSegment(ref: c.ref, token: c.token, worker: "w1")])
        let segs = try await store.segments(job: job.id)
        #expect(segs.map(\.state) == [.done, .cancelled, .cancelled, .cancelled])
        #expect(segs.allSatisfy { $0.lease == nil })
        #expect(try await store.job(job.id)?.state == .cancelled)
        #expect(try await store.claimSegment(worker: "w3", leaseSeconds: 30) == nil)
        #expect(try await store.reportProgress(b.ref, token: b.token, framesDone: 5) == false)
        #expect(!(try await store.completeSegment(b.ref, token: b.token, resultBytes: 1, processSeconds: 1).isSuccess))
        #expect(try await store.cancelJob(job.id, reason: "again").isEmpty)
        let ev = try await store.events(job: job.id).last { $0.kind == .job }
        #expect(ev?.to == "cancelled" && ev?.reason == "user asked" && ev?.actor == "alice")
        // A finished job cannot be cancelled.
        let other = try await makeRunningJob(store, segments: 1)
        let s = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        _ = try await store.completeSegment(s.ref, token: s.token, resultBytes: 1, processSeconds: 1)
        try await store.markStitching(other.id)
        try await store.finishJob(other.id, audioFit: .exact, outputBytes: 1)
        await #expect(throws: DubfarmError.self) { try await store.cancelJob(other.id, reason: "late") }
    }

    @Test("retry resets dead and cancelled segments, keeps done ones, and runs the job again")
    func retry() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let job = try await makeRunningJob(store, segments: 3)
        let a = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        _ = try await store.completeSegment(a.ref, token: a.token, resultBytes: 1, processSeconds: 1)
        let b = try #require(try await store.claimSegment(worker: "w1", leaseSeconds: 30))
        let out = try await store.failSegment(b.ref, token: b.token, error: "decoder crashed",
                                              policy: RetryPolicy(maxAttempts: 1))
        #expect(try out.get().jobFailed)
        #expect(try await store.segments(job: job.id).map(\.state) == [.done, .dead, .cancelled])
        await #expect(throws: DubfarmError.self) { try await store.retryJob(JobID(123_456)) }

        let retried = try await store.retryJob(job.id, actor: "alice")
        #expect(retried.state == .running && retried.error == nil && retried.errorCode == nil && retried.finishedAt == nil, "\(retried.state) \(String(describing: retried.error)) \(String(describing: retried.errorCode))")
        let segs = try await store.segments(job: job.id)
        #expect(segs.map(\.state) == [.done, .pending, .pending])
        #expect(segs.allSatisfy { $0.failures == 0 && $0.notBefore == nil && $0.error == nil })
        let tail = try await store.events(job: job.id).filter { $0.kind == .job }.suffix(3).map(\.to)
        #expect(tail == ["queued", "planning", "running"])
        await #expect(throws: DubfarmError.self) { try await store.retryJob(job.id) }  // running: nothing to retry
        // The job finishes normally now.
        while let s = try await store.claimSegment(worker: "w2", leaseSeconds: 30) {
            _ = try await store.completeSegment(s.ref, token: s.token, resultBytes: 1, processSeconds: 1)
        }
        try await store.markStitching(job.id)

        // An unplanned cancelled job goes back to the queue.
        let q = try await store.createJob(NewJob(videoName: "v", audioName: "a"))
        try await store.cancelJob(q.id, reason: "oops")
        #expect(try await store.retryJob(q.id).state == .queued)
    }

    @Test("after a coordinator restart: planning requeued, stitching and ready jobs listed")
    func resume() async throws {
        let db = try await TestDatabase.create()
        defer { db.drop() }
        let store = db.store()
        let planning = try await store.createJob(NewJob(videoName: "p", audioName: "a"))
        _ = try await store.claimQueuedJob()
        let stitching = try await makeRunningJob(store, segments: 1)
        let s1 = try #require(try await store.claimSegment(worker: "w", leaseSeconds: 30))
        _ = try await store.completeSegment(s1.ref, token: s1.token, resultBytes: 1, processSeconds: 1)
        try await store.markStitching(stitching.id)
        let ready = try await makeRunningJob(store, segments: 1)
        let s2 = try #require(try await store.claimSegment(worker: "w", leaseSeconds: 30))
        #expect(try await store.completeSegment(s2.ref, token: s2.token, resultBytes: 1, processSeconds: 1).get().allDone)
        let busy = try await makeRunningJob(store, segments: 2)
        _ = busy

        // A new coordinator (a new store, a new connection) takes over.
        let next = db.store(actor: "coord-2")
        let report = try await next.jobsToResume()
        #expect(report.requeued == [planning.id])
        #expect(report.stitching.map(\.id) == [stitching.id])
        #expect(report.readyToStitch.map(\.id) == [ready.id])
        #expect(try await next.job(planning.id)?.state == .queued)
        let ev = try await next.events(job: planning.id).last
        #expect(ev?.to == "queued" && ev?.actor == "coord-2")
        #expect(try await next.claimQueuedJob()?.id == planning.id)
    }
}
