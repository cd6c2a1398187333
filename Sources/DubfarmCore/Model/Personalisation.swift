/// What a job asks of its personalisation phase (`submit --personalise[=SECONDS]`): the farm
/// fine-tunes the model on the job's own footage before it dubs it.
package struct PersonaliseRequest: Sendable, Hashable, Codable {
    /// Wall-clock seconds of training (the budget counts across a resume on another worker).
    package var seconds: Int
    /// Whether a failed personalisation lets the job run on the default weights instead of
    /// failing it.
    package var fallback: Bool
    /// Workers to train on at once, data-parallel (`torchrun`): the lease holder and up to
    /// `workers - 1` others that are idle when it starts. 1: one worker.
    package var workers: Int

    package init(seconds: Int, fallback: Bool = false, workers: Int = 1) {
        self.seconds = seconds
        self.fallback = fallback
        self.workers = workers
    }

    /// The budget when `--personalise` names none: five minutes.
    package static let defaultSeconds = 300
    /// The longest budget a job may ask for.
    package static let maxSeconds = 24 * 3600
    /// The most workers one fine-tune may train on.
    package static let maxWorkers = 64

    /// The job option keys that carry the request (in the job's `params.options`).
    package static let secondsOption = "personalise"
    package static let fallbackOption = "personalise.fallback"
    package static let workersOption = "personalise.workers"

    /// The request a job's options carry, if any (`0`: the job asked for none, whatever the
    /// coordinator's default); throws when they are malformed.
    package init?(options: [String: String]) throws(DubfarmError) {
        guard let text = options[Self.secondsOption], text != "0" else { return nil }
        guard let s = Int(text), s > 0, s <= Self.maxSeconds else {
            throw DubfarmError(.badInput, "personalise: \(text) is not a budget in seconds (1…\(Self.maxSeconds))")
        }
        var workers = 1
        if let text = options[Self.workersOption] {
            guard let n = Int(text), (1...Self.maxWorkers).contains(n) else {
                throw DubfarmError(.badInput, "personalise.workers: \(text) is not a number of workers (1…\(Self.maxWorkers))")
            }
            workers = n
        }
        self.init(seconds: s, fallback: options[Self.fallbackOption] == "true", workers: workers)
    }

    private enum CodingKeys: String, CodingKey { case seconds, fallback, workers }

    package init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(seconds: try c.decode(Int.self, forKey: .seconds), fallback: try c.decode(Bool.self, forKey: .fallback),
                  workers: try c.decodeIfPresent(Int.self, forKey: .workers) ?? 1)
    }

    /// Writes the request into a job's options.
    package func store(in options: inout [String: String]) {
        options[Self.secondsOption] = String(seconds)
        options[Self.fallbackOption] = fallback ? "true" : nil
        options[Self.workersOption] = workers > 1 ? String(workers) : nil
    }
}

/// The life of a job's personalisation: `preparing` (the coordinator builds the dataset from
/// the job's video) `→ pending → leased → done`; a failed attempt goes back to `pending` (its
/// last checkpoint kept) until its attempts are spent, then `failed`.
package enum PersonalisationState: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    case preparing, pending, leased, done, failed
    package var description: String { rawValue }
}

/// The pure rules of a personalisation's life, fencing included: the fine-tune is a unit of
/// work with a lease, like a segment. The store loads the row under a lock, asks this machine,
/// and writes back the answer.
package struct PersonalisationMachine: Sendable, Hashable {
    package var state: PersonalisationState
    /// The current lease's token; `nil` unless `state == .leased`.
    package var lease: LeaseToken?
    package var leasedBy: String?
    package var failures: Int
    package var leases: Int
    /// The training step of the last checkpoint the coordinator holds (a new lease resumes there).
    package var checkpointStep: Int?
    /// Whether the job runs on the default weights when this fails for good.
    package var fallback: Bool

    package init(state: PersonalisationState = .preparing, lease: LeaseToken? = nil, leasedBy: String? = nil, failures: Int = 0,
                leases: Int = 0, checkpointStep: Int? = nil, fallback: Bool = false) {
        self.state = state
        self.lease = lease
        self.leasedBy = leasedBy
        self.failures = failures
        self.leases = leases
        self.checkpointStep = checkpointStep
        self.fallback = fallback
    }

    /// Why an action was refused.
    package enum Rejection: Error, Sendable, Hashable, CustomStringConvertible {
        case staleToken(current: LeaseToken?)
        case wrongState(PersonalisationState)
        /// A checkpoint older than the one already kept.
        case olderCheckpoint(kept: Int, offered: Int)
        /// The job no longer waits for it (cancelled or failed meanwhile).
        case jobNotPersonalising(JobState)

        package var description: String {
            switch self {
            case .staleToken(let c): return "stale lease token (current lease: \(c.map { "\($0)" } ?? "none"))"
            case .wrongState(let s): return "personalisation is \(s)"
            case .olderCheckpoint(let kept, let offered): return "checkpoint of step \(offered) is older than the kept one (step \(kept))"
            case .jobNotPersonalising(let s): return "the job is \(s), no longer personalising"
            }
        }
    }

    /// What a failed attempt leads to.
    package enum FailureOutcome: Sendable, Hashable {
        /// Back to `pending`: another worker resumes from the last checkpoint.
        case retry
        /// Attempts spent (or the input is unusable): the job runs on the default weights.
        case fallBackToDefaultWeights
        /// Attempts spent (or the input is unusable), no fallback asked: the job fails.
        case failJob
    }

    /// The dataset is built: the fine-tune can be handed out.
    package mutating func prepared() throws(Rejection) {
        guard state == .preparing else { throw .wrongState(state) }
        state = .pending
    }

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

    /// Keeps the checkpoint of training step `step` sent under `token`.
    package mutating func checkpoint(token: LeaseToken, step: Int) throws(Rejection) {
        try check(token: token)
        if let kept = checkpointStep, step < kept { throw .olderCheckpoint(kept: kept, offered: step) }
        checkpointStep = step
    }

    /// Accepts the trained weights of lease `token`.
    package mutating func complete(token: LeaseToken) throws(Rejection) {
        try check(token: token)
        state = .done
        lease = nil
        leasedBy = nil
    }

    /// Records a failed attempt under `token`. A `permanent` failure (the job's footage is
    /// unusable for training: another attempt would fail the same way) ends it at once.
    package mutating func fail(token: LeaseToken, maxAttempts: Int, permanent: Bool = false) throws(Rejection) -> FailureOutcome {
        try check(token: token)
        failures += 1
        lease = nil
        leasedBy = nil
        if permanent || failures >= maxAttempts { return giveUp() }
        state = .pending
        return .retry
    }

    /// Ends the personalisation without a lease (the coordinator could not build the dataset).
    package mutating func giveUp() -> FailureOutcome {
        state = .failed
        lease = nil
        leasedBy = nil
        return fallback ? .fallBackToDefaultWeights : .failJob
    }

    /// Takes the lease back without counting a failure (the worker vanished, stopped or handed
    /// it back); the next lease resumes from the last checkpoint. `token == nil` releases
    /// whatever lease is current.
    package mutating func release(token: LeaseToken?) throws(Rejection) {
        if let token { try check(token: token) } else if state != .leased { throw .wrongState(state) }
        state = .pending
        lease = nil
        leasedBy = nil
    }
}

/// Where a fine-tune runs: the pure rules the dispatcher follows when a worker that can
/// personalise asks for work. A GPU worker takes a fine-tune before a CPU one; a job that asks
/// for several workers trains data-parallel on the lease holder (rank 0, which hosts the
/// `torchrun` rendezvous) and the idle workers like it at that moment (never waiting for more).
package enum PersonalisationPlacement {
    /// A worker that can personalise, as the dispatcher sees it.
    package struct Worker: Sendable, Hashable {
        package var name: String
        /// The trainer's device (`cpu`, `cuda`).
        package var device: String
        /// `HOST:PORT` where it hosts a rendezvous as rank 0; nil: it can only join one.
        package var rendezvous: String?
        package var idle: Bool

        package init(name: String, device: String = "cpu", rendezvous: String? = nil, idle: Bool = true) {
            self.name = name
            self.device = device
            self.rendezvous = rendezvous
            self.idle = idle
        }

        var isGPU: Bool { device != "cpu" }
    }

    /// Whether `worker` should leave the fine-tunes to another idle worker among `others`: a
    /// CPU worker defers to an idle GPU worker (which claims the fine-tune on its own turn)
    /// and takes segments meanwhile.
    package static func defers(_ worker: Worker, to others: [Worker]) -> Bool {
        !worker.isGPU && others.contains { $0.idle && $0.isGPU && $0.name != worker.name }
    }

    /// The order in which idle workers that can personalise look for a fine-tune: GPU workers
    /// first (the CPU ones defer to them), then by name.
    package static func claimOrder(_ workers: [Worker]) -> [Worker] {
        workers.sorted { ($0.isGPU ? 0 : 1, $0.name) < ($1.isGPU ? 0 : 1, $1.name) }
    }

    /// The workers that train beside `lead` (ranks 1…), chosen from `candidates`: idle, on the
    /// same device (one gang cannot mix NCCL and gloo), in the order given; at most `want - 1`.
    /// Empty when `lead` cannot host a rendezvous.
    package static func members(for lead: Worker, from candidates: [Worker], want: Int) -> [Worker] {
        guard want > 1, lead.rendezvous != nil else { return [] }
        return Array(candidates.filter { $0.idle && $0.name != lead.name && $0.device == lead.device }.prefix(want - 1))
    }
}
