import DubfarmCore
import Testing

@Suite("Group commit")
struct GroupCommitTests {
    @Test("the first request starts a drain; requests that arrive while it commits go together in the next batch")
    func batchesFormUnderLoad() {
        var q = GroupCommitQueue<Int, String>()
        let started = q.submit(0, "a")
        #expect(started)
        let first = q.nextBatch()
        #expect(first?.map(\.request) == [0])
        #expect(first?.map(\.waiter) == ["a"])
        // The first batch is being committed: these wait, and no second drain is started.
        for i in 1...4 {
            let startedAnother = q.submit(i, "w\(i)")
            #expect(!startedAnother)
        }
        #expect(q.waiting == 4)
        let second = q.nextBatch()
        #expect(second?.map(\.request) == [1, 2, 3, 4])
        #expect(second?.map(\.waiter) == ["w1", "w2", "w3", "w4"])
        let none = q.nextBatch()
        #expect(none == nil)
        #expect(!q.committing)
        #expect(q.batches == 2 && q.requests == 5)
    }

    @Test("batches are at most maxBatch long, oldest first")
    func maxBatch() {
        var q = GroupCommitQueue<Int, Int>(maxBatch: 2)
        _ = q.submit(0, 0)
        for i in 1..<5 { _ = q.submit(i, i) }
        var seen: [[Int]] = []
        while let b = q.nextBatch() { seen.append(b.map(\.request)) }
        #expect(seen == [[0, 1], [2, 3], [4]])
        #expect(GroupCommitQueue<Int, Int>(maxBatch: 0).maxBatch == 1)
    }

    @Test("light load: every request is a batch of one and starts its own drain")
    func lightLoad() {
        var q = GroupCommitQueue<String, Int>()
        for (i, word) in ["a", "bb", "ccc"].enumerated() {
            let started = q.submit(word, i)
            let batch = q.nextBatch()?.map(\.request)
            let after = q.nextBatch()
            #expect(started)
            #expect(batch == [word])
            #expect(after == nil)
        }
        #expect(q.batches == 3)
    }
}
