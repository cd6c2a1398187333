import DubfarmCore
import Foundation
import Logging
import Postgres

/// The farm's state in PostgreSQL: jobs, segments, workers and the event log.
///
/// PostgreSQL is the single source of truth: a coordinator killed at any instant loses nothing,
/// and a new one resumes from here (``jobsToResume(actor:)``). Every state change of a job or
/// segment writes an `events` row (who, when, why) in the same transaction. Segment changes
/// lock the row (`SELECT … FOR UPDATE`), apply ``DubfarmCore/SegmentStateMachine`` (where the
/// rules, fencing included, live) and write the answer back; claiming is one
/// `FOR UPDATE SKIP LOCKED` statement, so any number of stores can claim concurrently.
///
/// The actor runs on its own ``DubfarmCore/ThreadExecutor``: libpq blocks, and that thread is
/// the only one it blocks. A lost connection is re-opened on the next call.
package actor FarmStore {
    /// The NOTIFY channel raised when segments become claimable (a wake-up hint only).
    package static let workChannel = "dubfarm_work"
    /// A worker that failed this many segments of one job no longer gets that job's segments.
    package static let blocklistFailures = 3

    private let executor: ThreadExecutor
    package nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    private let url: String
    private var connection: PostgresConnection?
    let logger: Logger
    /// Who this store acts as in events when no actor is given (e.g. `coordinator@host`).
    package nonisolated let defaultActor: String
    /// The database this store talks to, without credentials.
    package nonisolated let target: String
    /// Whether claims and completions commit without waiting for the WAL flush.
    package nonisolated let asyncSegmentCommits: Bool
    /// How long a call waits for a lost database to come back before it fails.
    package nonisolated let reconnectSeconds: Double
    /// Reconnections after a lost connection since this store was made (for tests and logs).
    package private(set) var reconnections = 0

    /// A store for the database at `url` (a `postgresql://` URL); nothing is opened until
    /// ``connect(retryFor:)`` or the first call.
    ///
    /// - Parameter asyncSegmentCommits: commit claims and completions with
    ///   `synchronous_commit = off` (every other change still waits for its WAL flush). On a
    ///   disk with slow fsync this multiplies segment throughput; the price is that a crash of
    ///   the PostgreSQL *server* (not of the coordinator) may forget the last fraction of a
    ///   second of claims and completions. The database stays consistent: a forgotten claim's
    ///   result is rejected as stale and the segment redone; a forgotten completion is redone.
    ///
    /// - Parameter reconnectSeconds: how long a call waits for a lost database to come back
    ///   (reconnecting with exponential backoff) before it fails with `.unreachable`; 0 fails at
    ///   once. See ``db()``.
    package init(url: String, actor: String? = nil, asyncSegmentCommits: Bool = false,
                reconnectSeconds: Double = 0, logger: Logger = Logger(label: "dubfarm.store")) {
        self.asyncSegmentCommits = asyncSegmentCommits
        self.reconnectSeconds = max(0, reconnectSeconds)
        self.url = url
        self.logger = logger
        self.defaultActor = actor ?? "coordinator@\(ProcessInfo.processInfo.hostName)"
        self.target = PostgresTarget(parsing: url)?.description ?? PostgresTarget.redacted(url)
        self.executor = ThreadExecutor(name: "dubfarm-store")
    }

    deinit {
        executor.shutdown()
    }

    /// Opens the connection, retrying for up to `seconds` (a database that starts with the farm).
    package func connect(retryFor seconds: Double = 0) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        var delay = 0.1
        while true {
            do {
                _ = try db()
                return
            } catch let e as DubfarmError where e.code == .unreachable && Date() < deadline {
                logger.info("database not reachable yet, retrying", metadata: ["target": "\(target)", "error": "\(e.message)"])
                try await Task.sleep(nanoseconds: UInt64(min(delay, max(0.01, deadline.timeIntervalSinceNow)) * 1e9))
                delay = min(delay * 2, 2)
            }
        }
    }

    /// Closes the connection (the next call opens a new one).
    package func close() {
        connection?.close()
        connection = nil
    }

    /// The open connection, (re)connecting if needed.
    ///
    /// A connection the server closed while it was idle (a restart, a failover, an
    /// administrator's `pg_terminate_backend`) is noticed here, before a statement is lost on
    /// it. The store then reconnects with exponential backoff (0.1 s doubling to 2 s) for up to
    /// ``reconnectSeconds``, blocking only its own thread: every caller simply waits for the
    /// database, and nothing is retried twice. Past the deadline it throws `.unreachable`.
    func db() throws -> PostgresConnection {
        if let c = connection, c.checkAlive() { return c }
        let deadline = Date().addingTimeInterval(reconnectSeconds)
        var delay = 0.1
        var attempts = 0
        while true {
            do {
                let c: PostgresConnection
                if let old = connection {
                    if attempts == 0 { logger.warning("database connection lost; reconnecting", metadata: ["target": "\(target)"]) }
                    try old.reconnect()
                    try configureSession(old)
                    reconnections += 1
                    logger.notice("database connection restored", metadata: ["target": "\(target)", "attempts": "\(attempts + 1)"])
                    c = old
                } else {
                    c = try PostgresConnection(url: url, applicationName: "dubfarm-store")
                    try configureSession(c)
                    connection = c
                }
                return c
            } catch let e as DubfarmError where e.code == .unreachable && Date() < deadline {
                attempts += 1
                if attempts == 1 || attempts % 10 == 0 {
                    logger.warning("database unreachable; retrying", metadata: ["target": "\(target)", "error": "\(e.message)",
                                                                             "retry_in": "\(delay)"])
                }
                usleep(UInt32(min(delay, max(0.01, deadline.timeIntervalSinceNow)) * 1e6))
                delay = min(delay * 2, 2)
            }
        }
    }

    private func configureSession(_ c: PostgresConnection) throws {
        if asyncSegmentCommits { try c.query("SET synchronous_commit = off") }
    }

    /// Runs `body` in one transaction on the connection (always a durable commit).
    ///
    /// When the connection is lost before `COMMIT` was sent, nothing was committed: the store
    /// reconnects (see ``db()``) and runs the whole transaction again, so a database restart
    /// costs callers a wait, not an error. A connection lost *during* `COMMIT` is not retried
    /// (the outcome is unknown) and throws `.unreachable`.
    func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let deadline = Date().addingTimeInterval(reconnectSeconds)
        while true {
            var committing = false
            do {
                return try transactionOnce(body, committing: &committing)
            } catch let e as DubfarmError where e.code == .unreachable && !committing && Date() < deadline {
                logger.warning("database connection lost mid-transaction; retrying it", metadata: ["error": "\(e.message)"])
                connection?.close()
            }
        }
    }

    private func transactionOnce<T>(_ body: (PostgresConnection) throws -> T, committing: inout Bool) throws -> T {
        let c = try db()
        if asyncSegmentCommits {
            // The session commits segment traffic asynchronously; this transaction waits for its WAL flush.
            try c.pipeline([PostgresStatement("BEGIN"), PostgresStatement("SET LOCAL synchronous_commit = on")])
        } else {
            try c.query("BEGIN", prepare: true)
        }
        do {
            let value = try body(c)
            committing = true
            try c.query("COMMIT", prepare: true)
            return value
        } catch {
            if c.isConnected && c.inTransaction { _ = try? c.query("ROLLBACK") }
            throw error
        }
    }

    // MARK: Schema

    /// Applies the embedded migrations this database lacks; returns those it applied (empty when
    /// the schema is current). Safe to run from several processes at once.
    @discardableResult
    package func migrate() throws -> [Migration] {
        try migrate(Migration.embedded)
    }

    /// Applies `migrations` (tests use this to simulate other builds).
    @discardableResult
    package func migrate(_ migrations: [Migration]) throws -> [Migration] {
        let applied = try Migrator.migrate(try db(), migrations: migrations)
        for m in applied { logger.info("applied migration \(m)") }
        return applied
    }

    /// The database's schema version (0: no dubfarm schema).
    package func schemaVersion() throws -> Int {
        try Migrator.version(try db())
    }

    /// Throws unless the database's schema is exactly what this build knows: `.schemaTooNew` when
    /// it is newer, `.configuration` ("run `dubfarm migrate`") when older.
    package func checkSchema() throws {
        try Migrator.check(try db(), known: Migration.latestVersion)
    }

    // MARK: Shared helpers

    /// A segment's statistics as the `stats` jsonb parameter (nil: keep what the row has).
    static func statsParameter(_ stats: SegmentStats?) throws -> PostgresValue? {
        try stats.map { PostgresValue.json(String(decoding: try JSONEncoder().encode($0), as: UTF8.self)) }
    }

    /// Inserts one event row.
    func recordEvent(_ c: PostgresConnection, kind: EventKind, job: JobID? = nil, segment: Int? = nil,
                     worker: String? = nil, from: String?, to: String?, reason: String?, actor: String?) throws {
        try c.query("""
            INSERT INTO events (kind, job_id, segment_idx, worker, from_state, to_state, reason, actor)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            """,
            [.text(kind.rawValue), job.map { .int(Int($0.rawValue)) }, segment.map { .int($0) }, worker.map { .text($0) },
             from.map { .text($0) }, to.map { .text($0) }, reason.map { .text($0) }, .text(actor ?? defaultActor)],
            prepare: true)
    }

    /// Raises the work hint (delivered at commit when inside a transaction).
    func notifyWork(_ c: PostgresConnection) throws {
        try c.notify(Self.workChannel)
    }
}

/// Waits for the ``FarmStore/workChannel`` hint on a connection of its own (LISTEN blocks the
/// connection's thread while it waits, so it must not share the store's).
package actor WorkListener {
    private let executor = ThreadExecutor(name: "dubfarm-listen")
    package nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private let url: String
    private var connection: PostgresConnection?

    package init(url: String) {
        self.url = url
    }

    deinit { executor.shutdown() }

    /// Starts listening (idempotent).
    package func start() throws {
        if let c = connection, c.isConnected { return }
        if let c = connection {
            try c.reconnect()
            return
        }
        let c = try PostgresConnection(url: url, applicationName: "dubfarm-listen")
        try c.listen(FarmStore.workChannel)
        connection = c
    }

    /// Waits up to `timeout` seconds for a hint; returns whether one came. Correctness never
    /// depends on it: callers poll on timeout anyway.
    package func wait(timeout: Double) throws -> Bool {
        try start()
        return try !(connection!.waitForNotifications(timeout: timeout).isEmpty)
    }
}
