/// The coordinator's side of worker liveness, as pure rules: which workers are lost (silent for
/// longer than the liveness timeout) and which are due a heartbeat; when leases are renewed and
/// when abandoned ones are swept. The dispatcher asks it on every tick and does the I/O.
///
/// A stall of the coordinator itself (a database call that waited for a reconnect) is not the
/// workers' silence: their heartbeats queued meanwhile, so silence counts from the stall's end.
struct Liveness: Sendable {
    typealias Instant = ContinuousClock.Instant

    /// Between two messages to a worker (a HEARTBEAT when nothing else was sent).
    let heartbeat: Duration
    /// Silence longer than this: the worker is lost and its leases go back.
    let silence: Duration
    /// How often the leases of live workers are extended (a third of the lease).
    let renewal: Duration
    /// How often leases nobody renews are taken back.
    let sweep: Duration

    private(set) var resumedAt: Instant
    private var lastRenewal: Instant
    private var lastSweep: Instant

    init(heartbeat: Duration, silence: Duration, leaseSeconds: Double, sweep: Duration = .seconds(2), now: Instant) {
        self.heartbeat = heartbeat
        self.silence = silence
        renewal = .milliseconds(Int(leaseSeconds * 1000 / 3))
        self.sweep = sweep
        resumedAt = now
        lastRenewal = now
        lastSweep = now
    }

    /// Handling something that began at `start` ended at `now`: longer than a heartbeat
    /// interval is a stall.
    mutating func noteStall(since start: Instant, now: Instant) {
        if now - start > heartbeat { resumedAt = now }
    }

    /// What becomes of a worker last heard at `lastHeard` and last written to at `lastSent`.
    enum Verdict: Equatable { case fine, heartbeatDue, lost }

    func verdict(lastHeard: Instant, lastSent: Instant, now: Instant) -> Verdict {
        if now - max(lastHeard, resumedAt) > silence { return .lost }
        return now - lastSent >= heartbeat ? .heartbeatDue : .fine
    }

    /// Which housekeeping is due at `now` (and marks it done): renewing the live workers'
    /// leases, sweeping abandoned ones. Renewal comes with every sweep too, so after the
    /// database was away our own workers' leases are extended before anything is taken back.
    mutating func housekeeping(now: Instant) -> (renew: Bool, sweep: Bool) {
        let sweepDue = now - lastSweep > sweep
        let renew = sweepDue || now - lastRenewal > renewal
        if renew { lastRenewal = now }
        if sweepDue { lastSweep = now }
        return (renew, sweepDue)
    }
}
