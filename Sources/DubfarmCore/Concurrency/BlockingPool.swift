import Foundation

/// A fixed set of OS threads for short blocking calls (writing and fsyncing a file) made many
/// times a second: unlike ``runBlocking(_:_:)``, no thread is created and torn down per call,
/// and the cooperative pool is never blocked. Calls beyond the thread count wait their turn.
public final class BlockingPool: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [() -> Void] = []
    public let name: String
    public let threads: Int

    /// Starts `threads` threads (at least 1) that live as long as the process.
    public init(name: String, threads: Int) {
        self.name = name
        self.threads = max(1, threads)
        for i in 0..<self.threads {
            let thread = Thread { [self] in work() }
            thread.name = "\(name)-\(i)"
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Runs `body` on one of the pool's threads and returns its result.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
            condition.lock()
            queue.append {
                do { c.resume(returning: try body()) } catch { c.resume(throwing: error) }
            }
            condition.signal()
            condition.unlock()
        }
    }

    private func work() {
        while true {
            condition.lock()
            while queue.isEmpty { condition.wait() }
            let job = queue.removeFirst()
            condition.unlock()
            job()
        }
    }
}
