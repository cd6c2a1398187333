import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A serial executor backed by one dedicated OS thread.
///
/// Actors that make blocking C calls (libpq, FFmpeg) run on one of these, so the blocking stays
/// off Swift's cooperative thread pool:
///
/// ```swift
/// actor Store {
///     let executor = ThreadExecutor(name: "db")
///     nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
/// }
/// ```
package final class ThreadExecutor: SerialExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [UnownedJob] = []
    private var stopped = false
    package let name: String

    package init(name: String) {
        self.name = name
        let thread = Thread { [self] in
            nameCurrentThread(name)
            run()
        }
        thread.name = name
        thread.start()
    }

    package func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        queue.append(job)
        condition.signal()
        condition.unlock()
    }

    package func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets the thread exit once its queue is empty.
    package func shutdown() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while queue.isEmpty && !stopped { condition.wait() }
            if queue.isEmpty && stopped {
                condition.unlock()
                return
            }
            let batch = queue
            queue.removeAll(keepingCapacity: true)
            condition.unlock()
            for job in batch { job.runSynchronously(on: asUnownedSerialExecutor()) }
        }
    }
}

/// Runs blocking work (decoding, muxing, file I/O) on a fresh OS thread and awaits its result,
/// so the cooperative pool is never blocked.
package func runBlocking<T: Sendable>(_ name: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
        let thread = Thread {
            nameCurrentThread(name)
            do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
        }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }
}

/// Names the calling OS thread (as `top -H`, `perf` and `/proc/PID/task/*/comm` show it; at most
/// 15 bytes are kept). Foundation's `Thread.name` does not reach the OS on Linux.
package func nameCurrentThread(_ name: String) {
    #if os(Linux)
    // pthread_setname_np is not visible to Swift (a GNU extension); the kernel takes the name here.
    let fd = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return }
    defer { close(fd) }
    let bytes = Array(name.utf8.prefix(15))
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    #endif
}
