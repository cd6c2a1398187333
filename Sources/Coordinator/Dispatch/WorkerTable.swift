import DubfarmCore
import FarmProtocol
import FarmStore
import Foundation

/// The workers connected to the work endpoint and what each is doing: registration, claiming,
/// the task or fine-tune in hand, counters, and which states the database already has.
///
/// Pure bookkeeping, no I/O: the ``Dispatcher`` asks it and then talks to the database and the
/// socket. Workers are keyed by their ZeroMQ identity.
struct WorkerTable {
    /// One connected worker.
    struct Peer {
        let identity: [UInt8]
        var hello: WorkerHello
        var lastHeard: ContinuousClock.Instant
        var lastSent: ContinuousClock.Instant
        var task: TaskRef?
        var taskStarted: ContinuousClock.Instant?
        /// Frames the current task must return.
        var taskFrames = 0
        var framesDone = 0
        var segmentsDone = 0
        var totalFrames = 0
        var connectedAt = Date()
        var lastSeenDate = Date()
        /// The job it is fine-tuning the model for (`personalise`), if any.
        var training: TrainRef?
        /// Its rank in that fine-tune: 0 holds the lease; 1… joined it (data-parallel).
        var trainingRank = 0
        /// Personalised weights sent to it (by SHA-256): it has them in its cache.
        var weightsSent: Set<String> = []
        /// It sent a partial result: it is stopping and takes no more work.
        var stopping = false
        /// Neither a segment nor a fine-tune.
        var isIdle: Bool { task == nil && training == nil }
    }

    private var peers: [[UInt8]: Peer] = [:]
    /// Idle workers a segment is being claimed and cut for. The dispatcher is re-entered while
    /// the database answers; without this, a tick and a READY could both claim for the same idle
    /// worker, and one of the two leases would be handed straight back.
    private var claiming: Set<[UInt8]> = []
    /// Worker states as last written to the database, so only changes are written.
    private var persisted: [String: (WorkerStatus, SegmentRef?)] = [:]

    subscript(id: [UInt8]) -> Peer? { peers[id] }
    var all: Dictionary<[UInt8], Peer>.Values { peers.values }
    var identities: Dictionary<[UInt8], Peer>.Keys { peers.keys }

    /// The connected worker called `name`.
    func identity(of name: String) -> [UInt8]? {
        peers.first { $0.value.hello.name == name }?.key
    }

    // MARK: Connecting and leaving

    /// A worker said READY as `hello`: the peer it becomes, keeping what this coordinator knew
    /// of the same identity (counters, the task and fine-tune in hand, weights sent). Another
    /// identity under the same name (the worker restarted as a new process) is removed and
    /// returned in `replaced`. The peer is not stored: the dispatcher checks its leases first
    /// and then calls ``store(_:)``.
    mutating func connect(_ id: [UInt8], _ hello: WorkerHello, now: ContinuousClock.Instant) -> (peer: Peer, existing: Peer?, replaced: [Peer]) {
        var replaced: [Peer] = []
        for (other, peer) in peers where peer.hello.name == hello.name && other != id {
            peers[other] = nil
            replaced.append(peer)
        }
        let existing = peers[id]
        var peer = Peer(identity: id, hello: hello, lastHeard: now, lastSent: now,
                        task: existing?.task, taskStarted: existing?.taskStarted)
        peer.connectedAt = existing?.connectedAt ?? Date()
        peer.training = existing?.training
        peer.trainingRank = existing?.trainingRank ?? 0
        peer.weightsSent = existing?.weightsSent ?? []
        peer.segmentsDone = existing?.segmentsDone ?? 0
        peer.totalFrames = existing?.totalFrames ?? 0
        return (peer, existing, replaced)
    }

    /// Stores `peer` (after ``connect(_:_:now:)``), noting the state the database now has.
    mutating func store(_ peer: Peer, persisted state: WorkerStatus? = nil) {
        peers[peer.identity] = peer
        if let state { persisted[peer.hello.name] = (state, peer.task?.segment) }
    }

    /// Removes a worker that left or was lost. (A claim in flight for it ends on its own and
    /// hands the segment back when it finds the worker gone.)
    mutating func remove(_ id: [UInt8]) -> Peer? {
        peers.removeValue(forKey: id)
    }

    /// A message arrived from `id`.
    mutating func heard(_ id: [UInt8], at now: ContinuousClock.Instant) {
        peers[id]?.lastHeard = now
        peers[id]?.lastSeenDate = Date()
    }

    /// A heartbeat went to `id`.
    mutating func heartbeatSent(_ id: [UInt8], at now: ContinuousClock.Instant) {
        peers[id]?.lastSent = now
    }

    // MARK: Claiming

    /// Idle workers nobody is claiming for.
    func idleUnclaimed() -> [[UInt8]] {
        peers.values.filter { $0.isIdle && !$0.stopping && !claiming.contains($0.identity) }.map(\.identity)
    }

    /// Starts claiming for `id`: false when it is gone, busy or already being claimed for.
    mutating func beginClaim(_ id: [UInt8]) -> Bool {
        guard let peer = peers[id], peer.isIdle, !peer.stopping, !claiming.contains(id) else { return false }
        claiming.insert(id)
        return true
    }

    /// Starts claiming for all of `ids` at once (one batched claim), whatever their state.
    mutating func beginClaim(all ids: [[UInt8]]) { claiming.formUnion(ids) }

    mutating func endClaim(_ id: [UInt8]) { claiming.remove(id) }
    mutating func endClaim(all ids: [[UInt8]]) { claiming.subtract(ids) }

    // MARK: Segments

    /// `ref` (of `frames` frames) went to `id`.
    mutating func taskSent(_ id: [UInt8], _ ref: TaskRef, frames: Int, at now: ContinuousClock.Instant) {
        guard peers[id] != nil else { return }
        peers[id]!.task = ref
        peers[id]!.taskStarted = now
        peers[id]!.taskFrames = frames
        peers[id]!.framesDone = 0
        peers[id]!.lastSent = now
    }

    /// `id` reported `done` frames of its task.
    mutating func progress(_ id: [UInt8], framesDone done: Int) {
        peers[id]?.framesDone = done
    }

    /// `id` is done with `ref` (result or failure; `frames` counted as its work): false, and
    /// nothing changes, when `ref` is not its task (it left, or the task was taken back).
    /// `id` said it is stopping (a partial result): it is offered no more work.
    mutating func markStopping(_ id: [UInt8]) {
        peers[id]?.stopping = true
    }

    mutating func finish(_ id: [UInt8], _ ref: TaskRef, frames: Int) -> Bool {
        guard var peer = peers[id], peer.task == ref else { return false }
        peer.task = nil
        peer.taskStarted = nil
        peer.framesDone = 0
        peer.segmentsDone += 1
        peer.totalFrames += frames
        peers[id] = peer
        return true
    }

    /// Records that `id` holds the personalised weights `sha`; false when it already did.
    mutating func weightsSent(_ id: [UInt8], _ sha: String) -> Bool {
        guard peers[id] != nil else { return false }
        return peers[id]!.weightsSent.insert(sha).inserted
    }

    /// The workers working on `ref`.
    func holders(of ref: TaskRef) -> [Peer] {
        peers.values.filter { $0.task == ref }
    }

    // MARK: Fine-tunes

    /// `id` takes part in fine-tune `ref` as rank `rank` (0: the lease holder).
    mutating func trainingSent(_ id: [UInt8], _ ref: TrainRef, rank: Int, at now: ContinuousClock.Instant) {
        guard peers[id] != nil else { return }
        peers[id]!.training = ref
        peers[id]!.trainingRank = rank
        peers[id]!.lastSent = now
    }

    /// An idle `id` reports progress on `ref` (it was training before this coordinator
    /// started, and its lease is current): it is busy with it again.
    mutating func trainingResumed(_ id: [UInt8], _ ref: TrainRef) {
        guard let peer = peers[id], peer.isIdle else { return }
        peers[id]!.training = ref
    }

    /// `id` is done with fine-tune `ref`: its rank in it, or nil (nothing changes) when `ref`
    /// is not what it was doing.
    mutating func finishTraining(_ id: [UInt8], _ ref: TrainRef) -> Int? {
        guard let peer = peers[id], peer.training == ref else { return nil }
        peers[id]!.training = nil
        peers[id]!.trainingRank = 0
        return peer.trainingRank
    }

    /// The members (ranks 1…) of job `job`'s fine-tune.
    func gangMembers(of job: JobID) -> [Peer] {
        peers.values.filter { $0.training?.job == job && $0.trainingRank > 0 }
    }

    // MARK: Views

    /// The state the database should show for each worker whose state changed since it was
    /// last written (see ``persisted(_:)``).
    func stateChanges(draining: Bool) -> [FarmStore.WorkerStateUpdate] {
        peers.values.compactMap { peer in
            let state: WorkerStatus = peer.isIdle ? (draining || peer.stopping ? .draining : .idle) : .busy
            let current = peer.task?.segment
            if let p = persisted[peer.hello.name], p.0 == state, p.1 == current { return nil }
            return FarmStore.WorkerStateUpdate(name: peer.hello.name, state: state, segment: current)
        }
    }

    /// The database now shows `updates`.
    mutating func persisted(_ updates: [FarmStore.WorkerStateUpdate]) {
        for u in updates { persisted[u.name] = (u.state, u.segment) }
    }

    /// Workers still working (on a segment or a fine-tune).
    var busyCount: Int { peers.values.filter { !$0.isIdle }.count }

    /// The workers as `dubfarm workers` and the dashboard show them, by name.
    func views(now: ContinuousClock.Instant, draining: Bool) -> [WorkerView] {
        peers.values.sorted { $0.hello.name < $1.hello.name }.map { p in
            let ago = now - p.lastHeard
            return WorkerView(name: p.hello.name, host: p.hello.host, state: p.isIdle ? (draining ? "draining" : "idle") : "busy",
                              threads: p.hello.threads, stage: p.hello.stage, model: p.hello.model,
                              current: p.task.map { "\($0.segment.job)/\($0.segment.index)" } ?? p.training.map { "\($0.job)/personalise" },
                              connectedAt: p.connectedAt,
                              lastSeen: Date().addingTimeInterval(-ago.seconds), segmentsDone: p.segmentsDone,
                              framesDone: p.totalFrames + p.framesDone)
        }
    }

    /// Frames in progress per leased segment (for job progress).
    func inFlight() -> [SegmentRef: Int] {
        var out: [SegmentRef: Int] = [:]
        for p in peers.values { if let t = p.task { out[t.segment] = p.framesDone } }
        return out
    }

    /// What the connected workers can run.
    func capabilities() -> [WorkerCapabilities] {
        peers.values.map { WorkerCapabilities(stage: $0.hello.stage, model: $0.hello.model, threads: $0.hello.threads) }
    }
}
