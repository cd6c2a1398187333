import Synchronization

/// Runs work in order per key and concurrently across keys: the work endpoint's messages are
/// handled in the order each worker sent them, while one worker's result (its file written and
/// fsynced, its completion committed) no longer waits behind another worker's.
///
/// Each key's queue is a chain of tasks, each awaiting the one before; the tail is forgotten
/// once it finishes, so idle keys cost nothing.
final class PeerOrderedDelivery<Key: Hashable & Sendable>: Sendable {
    private struct Tail {
        var seq: UInt64
        var task: Task<Void, Never>
    }
    private let tails = Mutex<[Key: Tail]>([:])

    /// Queues `body` after everything queued earlier for `key`.
    func enqueue(_ key: Key, _ body: @escaping @Sendable () async -> Void) {
        tails.withLock { tails in
            let previous = tails[key]?.task
            let seq = (tails[key]?.seq ?? 0) &+ 1
            let task = Task {
                await previous?.value
                await body()
                self.finished(key, seq)
            }
            tails[key] = Tail(seq: seq, task: task)
        }
    }

    /// Waits for everything queued so far.
    func waitForAll() async {
        for task in tails.withLock({ $0.values.map(\.task) }) { await task.value }
    }

    /// Keys with work queued or running.
    var busyKeys: Int { tails.withLock { $0.count } }

    private func finished(_ key: Key, _ seq: UInt64) {
        tails.withLock { tails in
            if tails[key]?.seq == seq { tails[key] = nil }
        }
    }
}

extension Dispatcher {
    /// Handles the work endpoint's messages until `inbound` ends: in order per worker (by ZeroMQ
    /// identity), concurrently across workers. Returns once the last one is handled.
    nonisolated func serve(_ inbound: AsyncStream<RouterEndpoint.Inbound>) async {
        let queues = PeerOrderedDelivery<[UInt8]>()
        for await m in inbound {
            queues.enqueue(m.identity) { await self.receive(m) }
        }
        await queues.waitForAll()
    }
}
