import Testing
@testable import Coordinator

@Suite("Coordinator group commit of completions: durable records first, failures confined")
struct CompletionCommitTests {
    final class Log {
        let name: String
        var syncs = 0
        var broken = false
        init(_ name: String) { self.name = name }
    }
    struct Refused: Error, Equatable { var request: Int }
    struct Unreachable: Error {}

    /// A transaction that fails whole when it contains a request in `bad`; records each call.
    final class Database {
        var bad: Set<Int> = []
        var unreachable = false
        var calls: [[Int]] = []
        func transaction(_ requests: [Int]) throws -> [String] {
            calls.append(requests)
            if unreachable { throw Unreachable() }
            if let b = requests.first(where: bad.contains) { throw Refused(request: b) }
            return requests.map { "done \($0)" }
        }
    }

    func run(_ batch: [(Int, Log)], _ db: Database) async -> [Result<String, any Error>] {
        await CompletionCommit.commit(batch.map { (request: $0.0, log: $0.1) }, sync: { log in
            log.syncs += 1
            if log.broken { throw Refused(request: -1) }
        }, transaction: { try db.transaction($0) }, isUnreachable: { $0 is Unreachable })
    }

    func outcomes(_ r: [Result<String, any Error>]) -> [String] {
        r.map {
            switch $0 {
            case .success(let s): s
            case .failure(let e as CompletionCommit.ResultNotDurable): "not durable (\(e.underlying))"
            case .failure(let e): "failed (\(e))"
            }
        }
    }

    @Test("each log is flushed once per batch; all go in one transaction; replies in order")
    func oneFlushPerLog() async {
        let (a, b) = (Log("a"), Log("b"))
        let db = Database()
        let r = await run([(1, a), (2, b), (3, a), (4, a)], db)
        #expect(outcomes(r) == ["done 1", "done 2", "done 3", "done 4"])
        #expect(a.syncs == 1 && b.syncs == 1)
        #expect(db.calls == [[1, 2, 3, 4]])
    }

    @Test("records of a log that cannot be flushed are never committed; the others are")
    func notDurable() async {
        let (a, b) = (Log("a"), Log("b"))
        b.broken = true
        let db = Database()
        let r = await run([(1, a), (2, b), (3, a), (4, b)], db)
        #expect(outcomes(r).map { $0.hasPrefix("not durable") ? "not durable" : $0 } == ["done 1", "not durable", "done 3", "not durable"])
        #expect(db.calls == [[1, 3]])
    }

    @Test("a completion that breaks the transaction fails alone: the rest are committed one by one")
    func confined() async {
        let a = Log("a")
        let db = Database()
        db.bad = [2]
        let r = await run([(1, a), (2, a), (3, a)], db)
        #expect(outcomes(r) == ["done 1", "failed (Refused(request: 2))", "done 3"])
        #expect(db.calls == [[1, 2, 3], [1], [2], [3]])
    }

    @Test("an unreachable database fails the whole batch without retrying each (the dispatcher retries)")
    func unreachable() async {
        let a = Log("a")
        let db = Database()
        db.unreachable = true
        let r = await run([(1, a), (2, a)], db)
        #expect(outcomes(r) == ["failed (Unreachable())", "failed (Unreachable())"])
        #expect(db.calls == [[1, 2]])
        #expect(await run([], db).isEmpty)
    }
}
