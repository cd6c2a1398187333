import Testing
@testable import Coordinator

@Suite("Coordinator liveness: lost workers, heartbeats, renewal and sweep")
struct LivenessTests {
    let t0 = ContinuousClock.now
    func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .milliseconds(Int(seconds * 1000)) }
    func make() -> Liveness { Liveness(heartbeat: .seconds(1), silence: .seconds(5), leaseSeconds: 30, now: t0) }

    @Test("a worker silent past the timeout is lost; otherwise it is due a heartbeat a second after the last message to it")
    func verdicts() {
        let l = make()
        #expect(l.verdict(lastHeard: at(0), lastSent: at(0), now: at(0.5)) == .fine)
        #expect(l.verdict(lastHeard: at(0), lastSent: at(0), now: at(1)) == .heartbeatDue)
        #expect(l.verdict(lastHeard: at(1), lastSent: at(5.5), now: at(6)) == .fine)
        #expect(l.verdict(lastHeard: at(0), lastSent: at(5.5), now: at(5.01)) == .lost)
    }

    @Test("after a stall of the coordinator (longer than a heartbeat), silence counts from the stall's end")
    func stall() {
        var l = make()
        l.noteStall(since: at(1), now: at(1.5))   // half a second: not a stall
        #expect(l.verdict(lastHeard: at(0), lastSent: at(9), now: at(9)) == .lost)
        l.noteStall(since: at(2), now: at(8))     // the database was away for 6 s
        #expect(l.verdict(lastHeard: at(0), lastSent: at(9), now: at(9)) == .fine)
        #expect(l.verdict(lastHeard: at(0), lastSent: at(12), now: at(13.5)) == .lost)
    }

    @Test("leases renewed every third of a lease and with every sweep; swept every 2 s")
    func housekeeping() {
        var l = make()
        #expect(l.housekeeping(now: at(1)) == (false, false))
        #expect(l.housekeeping(now: at(2.5)) == (true, true))
        #expect(l.housekeeping(now: at(3)) == (false, false))
        #expect(l.housekeeping(now: at(4.6)) == (true, true))
        // Without sweeps (a long lease's third is shorter than the sweep interval here), renewal alone.
        var fast = Liveness(heartbeat: .seconds(1), silence: .seconds(5), leaseSeconds: 3, sweep: .seconds(60), now: t0)
        #expect(fast.housekeeping(now: at(1.1)) == (true, false))
        #expect(fast.housekeeping(now: at(1.5)) == (false, false))
        #expect(fast.housekeeping(now: at(2.2)) == (true, false))
    }
}
