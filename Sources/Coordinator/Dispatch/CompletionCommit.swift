/// How a batch of segment completions is committed: result records first, then the database
/// rows that reference them, and a failure confined to what caused it.
///
/// The rules, apart from the store and the result log they drive (the dispatcher passes those
/// in as closures, so the rules are unit-tested without PostgreSQL or files):
///
/// 1. Each result log in the batch is flushed once, however many records of the batch it holds.
/// 2. Only completions whose log flushed are committed; the others fail with
///    ``ResultNotDurable`` and are never referenced by the database.
/// 3. The rest go in one transaction. If it fails because the database is unreachable, or the
///    batch is a single completion, they all fail with that error. Otherwise one of them made it
///    fail: each is committed on its own, so only that one fails.
/// 4. Replies come back in the batch's order.
enum CompletionCommit {
    /// A result whose record could not be made durable: it is not committed.
    struct ResultNotDurable: Error {
        var underlying: any Error
    }

    /// Commits `batch` (each completion with the log its record was written to) by the rules above.
    static func commit<Request, Reply, Log: AnyObject>(
        _ batch: [(request: Request, log: Log)],
        sync: (Log) throws -> Void,
        transaction: ([Request]) async throws -> [Reply],
        isUnreachable: (any Error) -> Bool
    ) async -> [Result<Reply, any Error>] {
        var failed: [ObjectIdentifier: any Error] = [:]
        var synced: Set<ObjectIdentifier> = []
        for entry in batch where synced.insert(ObjectIdentifier(entry.log)).inserted {
            do { try sync(entry.log) } catch { failed[ObjectIdentifier(entry.log)] = error }
        }
        let durable = batch.filter { failed[ObjectIdentifier($0.log)] == nil }.map(\.request)
        var committed = await commit(durable, transaction: transaction, isUnreachable: isUnreachable).makeIterator()
        return batch.map { entry in
            if let error = failed[ObjectIdentifier(entry.log)] { return .failure(ResultNotDurable(underlying: error)) }
            return committed.next()!
        }
    }

    /// Commits `requests` in one transaction; when one of them makes it fail, commits them one
    /// by one so only that one fails (rule 3).
    static func commit<Request, Reply>(
        _ requests: [Request],
        transaction: ([Request]) async throws -> [Reply],
        isUnreachable: (any Error) -> Bool
    ) async -> [Result<Reply, any Error>] {
        guard !requests.isEmpty else { return [] }
        do {
            return try await transaction(requests).map { .success($0) }
        } catch where isUnreachable(error) || requests.count == 1 {
            return requests.map { _ in .failure(error) }
        } catch {
            var replies: [Result<Reply, any Error>] = []
            for request in requests {
                do { replies.append(.success(try await transaction([request])[0])) } catch {
                    replies.append(.failure(error))
                }
            }
            return replies
        }
    }
}
