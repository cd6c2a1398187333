import Glibc
import CZeroMQ
import Synchronization

/// A readable file descriptor that other threads can raise, so a thread blocked in
/// ``ZMQPoller/poll(timeoutMilliseconds:)`` wakes up at once (an eventfd).
package final class EventSignal: Sendable {
    package let fd: Int32

    package init() {
        fd = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(fd >= 0, "eventfd failed")
    }

    deinit { close(fd) }

    /// Wakes the poller.
    package func raise() {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    /// Clears the signal.
    package func clear() {
        var v: UInt64 = 0
        _ = read(fd, &v, 8)
    }
}

/// A thread-safe queue of items for a socket's owner thread, with an ``EventSignal`` it polls.
///
/// Any thread or task may `post`; only the owner thread `drain`s and touches the socket.
package final class Mailbox<Item: Sendable>: Sendable {
    private let items = Mutex<[Item]>([])
    package let signal = EventSignal()

    package init() {}

    package func post(_ item: Item) {
        items.withLock { $0.append(item) }
        signal.raise()
    }

    /// Takes everything posted so far.
    package func drain() -> [Item] {
        signal.clear()
        return items.withLock { q in
            let out = q
            q.removeAll(keepingCapacity: true)
            return out
        }
    }
}
