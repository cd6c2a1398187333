/// Runs work in order per key and concurrently across keys: the work endpoint's messages are
/// handled in the order each worker sent them, while one worker's result (its record written,
/// its completion committed) does not wait behind another worker's.
///
/// Each key's queue is a chain of tasks, each awaiting the one before; the tail is forgotten
/// once it finishes, so idle keys cost nothing. The bookkeeping belongs to one actor, which
/// starts the tasks itself (see ``Dispatcher/serve(_:)``): a task started in the actor's own
/// context runs on the actor's executor from its first instruction, with no hop through the
/// cooperative pool.
struct PeerOrderedDelivery<Key: Hashable & Sendable> {
    private struct Tail {
        var seq: UInt64
        var task: Task<Void, Never>
    }
    private var tails: [Key: Tail] = [:]

    /// Queues work for `key`: `start` gets the task to await first (the key's current tail, if
    /// any) and the sequence number to report to ``finished(_:_:)``, and returns the new task.
    mutating func enqueue(_ key: Key, _ start: (_ previous: Task<Void, Never>?, _ seq: UInt64) -> Task<Void, Never>) {
        let seq = (tails[key]?.seq ?? 0) &+ 1
        tails[key] = Tail(seq: seq, task: start(tails[key]?.task, seq))
    }

    /// Forgets `key`'s tail if it is still task `seq`.
    mutating func finished(_ key: Key, _ seq: UInt64) {
        if tails[key]?.seq == seq { tails[key] = nil }
    }

    /// Tasks queued or running, one per key (each awaits the ones before it).
    var tailTasks: [Task<Void, Never>] { tails.values.map(\.task) }

}

extension Dispatcher {
    /// Handles the work endpoint's messages until `inbound` ends: in order per worker (by ZeroMQ
    /// identity), concurrently across workers. Returns once the last one is handled.
    ///
    /// Runs on the dispatcher's thread, as the handling does: a message goes from the socket's
    /// thread straight to this one.
    func serve(_ inbound: AsyncStream<RouterEndpoint.Inbound>) async {
        for await m in inbound {
            deliveries.enqueue(m.identity) { previous, seq in
                Task {
                    await previous?.value
                    await self.receive(m)
                    self.deliveries.finished(m.identity, seq)
                }
            }
        }
        while let task = deliveries.tailTasks.first { await task.value }
    }
}
