import Testing
@testable import DubfarmCore

@Suite("Segment state machine")
struct SegmentStateMachineTests {
    let policy = RetryPolicy(maxAttempts: 3, backoffBase: 2, backoffMax: 5)

    @Test("pending → leased → done under the lease's token")
    func happyPath() throws {
        var s = SegmentStateMachine()
        let t = LeaseToken.random()
        try s.lease(token: t, to: "w1")
        #expect(s.state == .leased && s.leasedBy == "w1" && s.leases == 1)
        try s.complete(token: t)
        #expect(s.state == .done && s.lease == nil)
    }

    @Test("fencing: a result under a superseded token is rejected and changes nothing")
    func fencing() throws {
        var s = SegmentStateMachine()
        let old = LeaseToken.random(), new = LeaseToken.random()
        try s.lease(token: old, to: "w1")
        try s.release(token: nil)          // w1 presumed dead
        try s.lease(token: new, to: "w2")
        let before = s
        #expect(throws: SegmentStateMachine.Rejection.staleToken(current: new)) { try s.complete(token: old) }
        #expect(throws: SegmentStateMachine.Rejection.staleToken(current: new)) { try s.fail(token: old, policy: policy) }
        #expect(throws: SegmentStateMachine.Rejection.staleToken(current: new)) { try s.check(token: old) }
        #expect(s == before)
        try s.complete(token: new)
        // A second delivery of the accepted result is stale too.
        #expect(throws: SegmentStateMachine.Rejection.staleToken(current: nil)) { try s.complete(token: new) }
        #expect(s.state == .done)
    }

    @Test("failures back off, then the segment is dead")
    func failures() throws {
        var s = SegmentStateMachine()
        var outcomes: [SegmentStateMachine.FailureOutcome] = []
        for _ in 0..<3 {
            let t = LeaseToken.random()
            try s.lease(token: t, to: "w")
            outcomes.append(try s.fail(token: t, policy: policy))
        }
        #expect(outcomes == [.retry(backoffSeconds: 2), .retry(backoffSeconds: 4), .dead])
        #expect(s.state == .dead)
        #expect(throws: SegmentStateMachine.Rejection.wrongState(.dead)) { try s.lease(token: .random(), to: "w") }
        s.reset()
        #expect(s.state == .pending && s.failures == 0)
    }

    @Test("a permanent failure (unusable input) makes the segment dead at once, without retries; a stale one is still rejected")
    func permanentFailure() throws {
        var s = SegmentStateMachine()
        let t = LeaseToken.random()
        try s.lease(token: t, to: "w")
        #expect(throws: SegmentStateMachine.Rejection.self) { try s.fail(token: .random(), policy: policy, permanent: true) }
        #expect(s.state == .leased)
        #expect(try s.fail(token: t, policy: policy, permanent: true) == .dead)
        #expect(s.state == .dead && s.failures == 1)
        #expect(DubfarmError.Code.badInput.isPermanent)
        #expect(![DubfarmError.Code.io, .internalError, .unsupported, .diskFull, .cancelled, .timeout].contains { $0.isPermanent })
    }

    @Test("a released lease is not a failure")
    func release() throws {
        var s = SegmentStateMachine()
        for _ in 0..<10 {
            try s.lease(token: .random(), to: "w")
            try s.release(token: nil)
        }
        #expect(s.state == .pending && s.failures == 0 && s.leases == 10)
    }

    @Test("cancel stops pending and leased segments, not finished ones")
    func cancel() throws {
        var a = SegmentStateMachine(), b = SegmentStateMachine(state: .done)
        try a.lease(token: .random(), to: "w")
        a.cancel()
        b.cancel()
        #expect(a.state == .cancelled && b.state == .done)
    }

    @Test("backoff doubles and is capped")
    func backoff() {
        let p = RetryPolicy(maxAttempts: 10, backoffBase: 1, backoffMax: 10)
        #expect((0...6).map { p.backoff(afterFailures: $0) } == [0, 1, 2, 4, 8, 10, 10])
    }

    @Test("job transitions")
    func jobStates() {
        #expect(JobState.queued.canTransition(to: .planning))
        #expect(JobState.running.canTransition(to: .stitching))
        #expect(!JobState.queued.canTransition(to: .done))
        #expect(!JobState.done.canTransition(to: .failed))
        #expect(JobState.failed.canTransition(to: .queued))
        #expect(JobState.running.canTransition(to: .cancelled))
        #expect(!JobState.cancelled.canTransition(to: .cancelled))
    }

    @Test("lease tokens print and parse as 32 hex digits")
    func tokens() {
        let t = LeaseToken(high: 0x1, low: 0xdead_beef)
        #expect(t.description == "0000000000000001" + "00000000deadbeef")
        #expect(LeaseToken(hex: t.description) == t)
        #expect(LeaseToken(hex: "xyz") == nil)
    }
}
