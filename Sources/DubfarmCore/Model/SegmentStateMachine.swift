/// The pure rules of a segment's life, fencing included.
///
/// The store loads a segment row under a row lock, asks this machine what happens, and writes
/// back the answer; the rules live here alone so they are unit-tested without a database.
package struct SegmentStateMachine: Sendable, Hashable {
    package var state: SegmentState
    /// The current lease's token; `nil` unless `state == .leased`.
    package var lease: LeaseToken?
    /// The worker holding the lease.
    package var leasedBy: String?
    /// Failed attempts so far (lost leases are not failures: see ``release(token:reason:)``).
    package var failures: Int
    /// Leases handed out so far.
    package var leases: Int

    package init(state: SegmentState = .pending, lease: LeaseToken? = nil, leasedBy: String? = nil,
                failures: Int = 0, leases: Int = 0) {
        self.state = state
        self.lease = lease
        self.leasedBy = leasedBy
        self.failures = failures
        self.leases = leases
    }

    /// Why an action was refused.
    package enum Rejection: Error, Sendable, Hashable, CustomStringConvertible {
        /// The token is not the current lease's: a late reply from a superseded lease.
        case staleToken(current: LeaseToken?)
        /// The segment is not in a state that allows the action.
        case wrongState(SegmentState)

        package var description: String {
            switch self {
            case .staleToken(let c): return "stale lease token (current lease: \(c.map { "\($0)" } ?? "none"))"
            case .wrongState(let s): return "segment is \(s)"
            }
        }
    }

    /// What a failure leads to.
    package enum FailureOutcome: Sendable, Hashable {
        /// Back to `pending`, not to be handed out again for `backoffSeconds`.
        case retry(backoffSeconds: Double)
        /// Attempts are spent: the segment is `dead` and its job fails.
        case dead
    }

    /// Hands the segment to `worker` under a fresh `token`.
    package mutating func lease(token: LeaseToken, to worker: String) throws(Rejection) {
        guard state == .pending else { throw .wrongState(state) }
        state = .leased
        lease = token
        leasedBy = worker
        leases += 1
    }

    /// Checks that `token` names the current lease (progress reports use this alone).
    package func check(token: LeaseToken) throws(Rejection) {
        guard state == .leased else {
            throw state == .pending || state == .done ? .staleToken(current: lease) : .wrongState(state)
        }
        guard lease == token else { throw .staleToken(current: lease) }
    }

    /// Accepts the result of the lease `token`.
    package mutating func complete(token: LeaseToken) throws(Rejection) {
        try check(token: token)
        state = .done
        lease = nil
    }

    /// Records a failed attempt under `token`.
    ///
    /// A `permanent` failure (the input itself is unusable: another attempt would fail the same
    /// way) makes the segment `dead` at once instead of retrying up to `policy.maxAttempts`.
    package mutating func fail(token: LeaseToken, policy: RetryPolicy, permanent: Bool = false) throws(Rejection) -> FailureOutcome {
        try check(token: token)
        failures += 1
        lease = nil
        leasedBy = nil
        if permanent || failures >= policy.maxAttempts {
            state = .dead
            return .dead
        }
        state = .pending
        return .retry(backoffSeconds: policy.backoff(afterFailures: failures))
    }

    /// Takes the lease back without counting a failure: the worker vanished, was stopped, or
    /// handed the segment back. `token == nil` releases whatever lease is current.
    package mutating func release(token: LeaseToken?) throws(Rejection) {
        if let token {
            try check(token: token)
        } else if state != .leased {
            throw .wrongState(state)
        }
        state = .pending
        lease = nil
        leasedBy = nil
    }

    /// Stops the segment for good because its job was cancelled.
    package mutating func cancel() {
        guard state == .pending || state == .leased else { return }
        state = .cancelled
        lease = nil
        leasedBy = nil
    }

    /// Makes a `dead` or `cancelled` segment `pending` again (the job's `retry`), with fresh attempts.
    package mutating func reset() {
        guard state == .dead || state == .cancelled else { return }
        state = .pending
        failures = 0
        lease = nil
        leasedBy = nil
    }
}

/// How often and how patiently a failed segment is retried.
package struct RetryPolicy: Sendable, Hashable, Codable {
    /// Failed attempts after which a segment is `dead`.
    package var maxAttempts: Int
    /// Backoff after the first failure, in seconds; doubles after each further failure.
    package var backoffBase: Double
    /// Upper bound on the backoff, in seconds.
    package var backoffMax: Double

    package init(maxAttempts: Int = 3, backoffBase: Double = 2, backoffMax: Double = 60) {
        self.maxAttempts = maxAttempts
        self.backoffBase = backoffBase
        self.backoffMax = backoffMax
    }

    /// Seconds to wait after `failures` failed attempts (≥ 1).
    package func backoff(afterFailures failures: Int) -> Double {
        guard failures > 0 else { return 0 }
        let exp = min(failures - 1, 30)
        return min(backoffMax, backoffBase * Double(1 << exp))
    }
}
