import DubfarmCore
import Foundation
import Synchronization
import Testing

@Suite("Group commit")
struct GroupCommitTests {
    /// A gate the commit closure waits on, opened by the test.
    final class Gate: Sendable {
        private let opened = Mutex<(Bool, [CheckedContinuation<Void, Never>])>((false, []))
        func wait() async {
            await withCheckedContinuation { c in
                let go = opened.withLock { s in
                    if s.0 { return true }
                    s.1.append(c)
                    return false
                }
                if go { c.resume() }
            }
        }
        func open() {
            for c in opened.withLock({ s in s.0 = true; defer { s.1 = [] }; return s.1 }) { c.resume() }
        }
    }

    @Test("requests that arrive while a commit is in flight go together in the next batch; each caller gets its own reply")
    func batchesFormUnderLoad() async throws {
        let gate = Gate()
        let seen = Mutex<[[Int]]>([])
        let gc = GroupCommit<Int, Int> { batch in
            seen.withLock { $0.append(batch) }
            if batch == [0] { await gate.wait() }
            return batch.map { $0 * 10 }
        }
        async let first = gc.submit(0)
        // The first commit is in flight (it waits on the gate); four more queue behind it.
        while seen.withLock({ $0.isEmpty }) { await Task.yield() }
        let rest = (1...4).map { i in Task { try await gc.submit(i) } }
        while await gc.waiting < 4 { await Task.yield() }
        gate.open()
        #expect(try await first == 0)
        for (i, t) in rest.enumerated() { #expect(try await t.value == (i + 1) * 10) }
        let batches = seen.withLock { $0 }
        #expect(batches.count == 2)
        #expect(batches[0] == [0])
        #expect(batches[1].sorted() == [1, 2, 3, 4])
        #expect(await gc.batches == 2)
        #expect(await gc.requests == 5)
    }

    @Test("a failed commit fails every request of its batch, and only those")
    func failurePerBatch() async throws {
        struct Boom: Error {}
        let gate = Gate()
        let gc = GroupCommit<Int, Int>(maxBatch: 2) { batch in
            if batch == [0] { await gate.wait() }
            if batch.contains(2) { throw Boom() }
            return batch
        }
        async let first = gc.submit(0)
        while await gc.batches == 0 { await Task.yield() }
        // Queued as [1, 2] then [3] (at most two per batch): the batch with 2 fails.
        let t1 = Task { try await gc.submit(1) }
        while await gc.waiting < 1 { await Task.yield() }
        let t2 = Task { try await gc.submit(2) }
        while await gc.waiting < 2 { await Task.yield() }
        let t3 = Task { try await gc.submit(3) }
        while await gc.waiting < 3 { await Task.yield() }
        gate.open()
        #expect(try await first == 0)
        await #expect(throws: Boom.self) { try await t1.value }
        await #expect(throws: Boom.self) { try await t2.value }
        #expect(try await t3.value == 3)
        #expect(await gc.batches == 3)
    }

    @Test("with nothing in flight a request is committed at once, alone")
    func aloneWhenIdle() async throws {
        let gc = GroupCommit<String, Int> { batch in batch.map(\.count) }
        for word in ["a", "bb", "ccc"] { #expect(try await gc.submit(word) == word.count) }
        #expect(await gc.batches == 3)
    }
}

@Suite("Blocking pool")
struct BlockingPoolTests {
    @Test("runs calls on its three threads (reused, never one per call), several at once, and returns results and errors to each caller")
    func runsConcurrently() async throws {
        struct Boom: Error {}
        final class Inside: Sendable {
            let m = Mutex((now: 0, most: 0))
            let threads = Mutex(Set<UInt>())
        }
        let pool = BlockingPool(name: "test-pool", threads: 3)
        let counter = Inside()
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for i in 0..<12 {
                group.addTask {
                    try await pool.run {
                        counter.m.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
                        defer { counter.m.withLock { $0.now -= 1 } }
                        counter.threads.withLock { _ = $0.insert(UInt(pthread_self())) }
                        usleep(20_000)
                        return i * i
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.sorted() == (0..<12).map { $0 * $0 })
        let most = counter.m.withLock { $0.most }
        #expect(most > 1 && most <= 3)
        // Twelve calls, three threads: the pool's threads are reused, none is made per call.
        #expect((2...3).contains(counter.threads.withLock { $0.count }))
        await #expect(throws: Boom.self) { try await pool.run { throw Boom() } }
    }
}
