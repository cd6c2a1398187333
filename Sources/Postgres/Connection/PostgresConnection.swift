import CLibPQ
import DubfarmCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One statement of a ``PostgresConnection/pipeline(_:)``.
package struct PostgresStatement: Sendable {
    package var sql: String
    package var params: [PostgresValue?]
    /// Prepare once per connection and reuse (for hot statements).
    package var prepare: Bool
    package init(_ sql: String, _ params: [PostgresValue?] = [], prepare: Bool = true) {
        self.sql = sql
        self.params = params
        self.prepare = prepare
    }
}

/// A notification received on a channel this connection listens to.
package struct PostgresNotification: Sendable, Hashable {
    package var channel: String
    package var payload: String
    /// The server process that sent it.
    package var senderPID: Int32
}

/// One blocking libpq connection.
///
/// Not thread-safe: use it from one thread (an actor on a ``DubfarmCore/ThreadExecutor``), since
/// every call blocks until the server answers. Errors are ``DubfarmCore/DubfarmError``s:
/// `.database` for a statement the server refused (with its SQLSTATE), `.unreachable` when the
/// server cannot be reached or the connection was lost. No message ever contains the password.
package final class PostgresConnection {
    private let conninfo: String
    /// Where this connection points (printable: no password).
    package let target: PostgresTarget
    private let connectTimeout: Int
    private let applicationName: String
    private var conn: OpaquePointer?
    private var preparedNames: [String: String] = [:]
    private var listening: Set<String> = []
    /// The SQLSTATE of the last statement the server refused, e.g. `23505` for a unique violation.
    package private(set) var lastSQLState: String?

    /// Connects to `url`: `postgresql://user@/db?host=/socket/dir&port=N`, a normal
    /// `postgresql://user:password@host:port/db` URL, or a libpq `key=value` string.
    ///
    /// The session uses UTF-8, `TimeZone=UTC` and `DateStyle=ISO`.
    package init(url: String, connectTimeoutSeconds: Int = 5, applicationName: String = "dubfarm") throws {
        let (target, problem) = PostgresTarget.parse(url)
        guard let target else {
            throw DubfarmError(.configuration,
                               "the PostgreSQL URL \(PostgresTarget.redact(url)) is malformed: \(problem ?? "unknown problem")")
        }
        self.conninfo = url
        self.target = target
        self.connectTimeout = max(1, connectTimeoutSeconds)
        self.applicationName = applicationName
        try open()
    }

    deinit {
        if let conn { PQfinish(conn) }
    }

    // MARK: Connection state

    /// Whether the connection is open and healthy as far as libpq knows.
    package var isConnected: Bool {
        guard let conn else { return false }
        return PQstatus(conn) == CONNECTION_OK
    }

    /// Whether the connection is still usable, reading whatever the server sent while it was
    /// idle (without blocking). A server that shut down or restarted sends a goodbye and closes
    /// the socket; this notices it *before* the next statement is sent, so the caller can
    /// reconnect instead of losing that statement. (A connection that breaks silently is still
    /// only noticed when a statement fails.)
    package func checkAlive() -> Bool {
        guard let conn, PQstatus(conn) == CONNECTION_OK else { return false }
        // Only between statements: while a result is pending, input belongs to that statement.
        guard PQisBusy(conn) == 0, PQtransactionStatus(conn) == PQTRANS_IDLE else { return true }
        if PQconsumeInput(conn) == 0 { return false }
        return PQstatus(conn) == CONNECTION_OK
    }

    /// Whether a transaction block is open (or failed and awaiting `ROLLBACK`).
    package var inTransaction: Bool {
        guard let conn else { return false }
        let s = PQtransactionStatus(conn)
        return s == PQTRANS_INTRANS || s == PQTRANS_INERROR || s == PQTRANS_ACTIVE
    }

    /// The server's version number, e.g. `150018`.
    package var serverVersion: Int {
        guard let conn else { return 0 }
        return Int(PQserverVersion(conn))
    }

    /// The server process serving this connection.
    package var backendPID: Int32 {
        guard let conn else { return 0 }
        return PQbackendPID(conn)
    }

    /// Closes the connection and opens a new one; prepared statements are forgotten and channels
    /// listened to are listened to again.
    package func reconnect() throws {
        close()
        try open()
        let channels = listening
        for channel in channels { _ = try query("LISTEN \(Self.quoteIdentifier(channel))") }
    }

    /// Closes the connection. Later calls throw `.unreachable` until ``reconnect()``.
    package func close() {
        if let conn { PQfinish(conn) }
        conn = nil
        preparedNames.removeAll()
    }

    private func open() throws {
        let keys = ["dbname", "connect_timeout", "client_encoding", "fallback_application_name"]
        let vals = [conninfo, String(connectTimeout), "UTF8", applicationName]
        let c = withCStrings(keys) { k in
            withCStrings(vals) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let c, PQstatus(c) == CONNECTION_OK else {
            let why = c.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let c { PQfinish(c) }
            throw DubfarmError(.unreachable,
                               "cannot connect to PostgreSQL at \(target): \(target.scrub(why.trimmingTrailingNewlines.oneLine)); is the server running and the URL right?")
        }
        conn = c
        // Server notices (e.g. "relation already exists, skipping") are not errors: drop them
        // instead of letting libpq print them on stderr.
        PQsetNoticeProcessor(c, { _, _ in }, nil)
        let res = PQexec(c, "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, MDY'; SET IntervalStyle TO 'postgres'")
        _ = try consume(res, what: "session setup")
    }

    private func live() throws -> OpaquePointer {
        guard let conn else {
            throw DubfarmError(.unreachable, "the connection to PostgreSQL at \(target) is closed")
        }
        return conn
    }

    // MARK: Statements

    /// Runs one statement with `$1…$n` parameters (text format) and returns its rows.
    ///
    /// With `prepare: true` the statement is prepared once per connection and reused, which saves
    /// the server's parse and plan on hot statements.
    @discardableResult
    package func query(_ sql: String, _ params: [PostgresValue?] = [], prepare: Bool = false) throws -> PostgresRows {
        let c = try live()
        let texts = params.map { $0?.textForm }
        let cstrs: [UnsafePointer<CChar>?] = texts.map { $0.map { UnsafePointer(strdup($0)!) } }
        defer { for p in cstrs { free(UnsafeMutablePointer(mutating: p)) } }
        let statementName = prepare ? try preparedName(sql, paramCount: params.count) : nil
        let res = cstrs.withUnsafeBufferPointer { buf -> OpaquePointer? in
            let values = buf.count == 0 ? nil : buf.baseAddress
            if let statementName {
                return PQexecPrepared(c, statementName, Int32(buf.count), values, nil, nil, 0)
            }
            return PQexecParams(c, sql, Int32(buf.count), nil, values, nil, nil, 0)
        }
        return try consume(res, what: sql)
    }

    /// The name of `sql` prepared on this connection, preparing it on first use.
    private func preparedName(_ sql: String, paramCount: Int) throws -> String {
        if let name = preparedNames[sql] { return name }
        let c = try live()
        let name = "dubfarm_\(preparedNames.count + 1)"
        _ = try consume(PQprepare(c, name, sql, Int32(paramCount), nil), what: sql)
        preparedNames[sql] = name
        return name
    }

    /// Sends `statements` in one round trip (libpq pipeline mode) and returns their rows in order.
    ///
    /// They run one after the other as usual; when one fails, the rest are skipped and its error
    /// is thrown. Use it to save round trips: `BEGIN` with the first statements of a transaction,
    /// or the last ones with `COMMIT`. (After a failure inside a transaction, the transaction is
    /// aborted: roll it back.)
    @discardableResult
    package func pipeline(_ statements: [PostgresStatement]) throws -> [PostgresRows] {
        var rows: [PostgresRows] = []
        for outcome in try pipelineOutcomes(statements) {
            switch outcome {
            case .success(let r): rows.append(r)
            case .failure(let e): throw e
            case nil: break
            }
        }
        return rows
    }

    /// Like ``pipeline(_:)``, but returns each statement's own outcome: its rows, its error, or
    /// `nil` when it was skipped because an earlier one failed. Throws only when the connection
    /// fails.
    package func pipelineOutcomes(_ statements: [PostgresStatement]) throws -> [Result<PostgresRows, DubfarmError>?] {
        let c = try live()
        let names = try statements.map { $0.prepare ? try preparedName($0.sql, paramCount: $0.params.count) : nil }
        guard PQenterPipelineMode(c) == 1 else {
            throw DubfarmError(.internalError, "libpq refused pipeline mode: \(String(cString: PQerrorMessage(c)).oneLine)")
        }
        defer { PQexitPipelineMode(c) }
        var allocated: [UnsafeMutablePointer<CChar>?] = []
        defer { for p in allocated { free(p) } }
        for (s, name) in zip(statements, names) {
            let cstrs: [UnsafePointer<CChar>?] = s.params.map { $0.map { UnsafePointer(strdup($0.textForm)!) } }
            allocated += cstrs.map { $0.map { UnsafeMutablePointer(mutating: $0) } }
            let ok = cstrs.withUnsafeBufferPointer { buf -> Int32 in
                let values = buf.count == 0 ? nil : buf.baseAddress
                if let name { return PQsendQueryPrepared(c, name, Int32(buf.count), values, nil, nil, 0) }
                return PQsendQueryParams(c, s.sql, Int32(buf.count), nil, values, nil, nil, 0)
            }
            guard ok == 1 else { throw lostConnection(c) }
        }
        guard PQpipelineSync(c) == 1 else { throw lostConnection(c) }
        var outcomes: [Result<PostgresRows, DubfarmError>?] = []
        for s in statements {
            guard let res = PQgetResult(c) else { throw lostConnection(c) }
            if PQresultStatus(res) == PGRES_PIPELINE_ABORTED {
                PQclear(res)
                outcomes.append(nil)
            } else {
                do {
                    outcomes.append(.success(try consume(res, what: s.sql)))
                } catch let e as DubfarmError {
                    if e.code == .unreachable { throw e }
                    outcomes.append(.failure(e))
                }
            }
            while let extra = PQgetResult(c) { PQclear(extra) }  // the NULL that ends this statement
        }
        guard let sync = PQgetResult(c) else { throw lostConnection(c) }
        PQclear(sync)
        return outcomes
    }

    /// Runs several `;`-separated statements without parameters (a migration, a setup script).
    /// Inside ``transaction(_:)`` they join that transaction; otherwise the server runs the
    /// whole script as one implicit transaction.
    package func execute(script: String) throws {
        let c = try live()
        _ = try consume(PQexec(c, script), what: script)
    }

    /// Runs `body` in a transaction: `BEGIN`, then `COMMIT` when it returns, `ROLLBACK` when it throws.
    /// Not reentrant.
    package func transaction<T>(_ body: () throws -> T) throws -> T {
        try query("BEGIN", prepare: true)
        do {
            let value = try body()
            try query("COMMIT", prepare: true)
            return value
        } catch {
            if isConnected && inTransaction { _ = try? query("ROLLBACK") }
            throw error
        }
    }

    // MARK: LISTEN / NOTIFY

    /// Starts listening to `channel`; notifications arrive through ``drainNotifications()`` and
    /// ``waitForNotifications(timeout:)``.
    package func listen(_ channel: String) throws {
        try query("LISTEN \(Self.quoteIdentifier(channel))")
        listening.insert(channel)
    }

    /// Stops listening to `channel`.
    package func unlisten(_ channel: String) throws {
        try query("UNLISTEN \(Self.quoteIdentifier(channel))")
        listening.remove(channel)
    }

    /// Sends `payload` to every session listening to `channel` (delivered when the current
    /// transaction commits, if one is open).
    package func notify(_ channel: String, payload: String = "") throws {
        try query("SELECT pg_notify($1, $2)", [.text(channel), .text(payload)], prepare: true)
    }

    /// The notifications that arrived so far, without blocking.
    package func drainNotifications() throws -> [PostgresNotification] {
        let c = try live()
        guard PQconsumeInput(c) == 1 else { throw lostConnection(c) }
        var out: [PostgresNotification] = []
        while let n = PQnotifies(c) {
            out.append(PostgresNotification(channel: String(cString: n.pointee.relname),
                                            payload: n.pointee.extra.map { String(cString: $0) } ?? "",
                                            senderPID: n.pointee.be_pid))
            PQfreemem(n)
        }
        return out
    }

    /// Waits up to `timeout` seconds for at least one notification (blocking the calling thread
    /// on the connection's socket) and returns what arrived; empty on timeout.
    package func waitForNotifications(timeout: Double) throws -> [PostgresNotification] {
        var got = try drainNotifications()
        guard got.isEmpty else { return got }
        let c = try live()
        let fd = PQsocket(c)
        guard fd >= 0 else { throw lostConnection(c) }
        let deadline = Date().addingTimeInterval(max(0, timeout))
        while got.isEmpty {
            let left = deadline.timeIntervalSinceNow
            if left <= 0 { break }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(min(left * 1000, 60_000).rounded(.up)))
            if r < 0 && errno != EINTR {
                throw DubfarmError(.io, "waiting on the PostgreSQL socket failed: \(String(cString: strerror(errno)))")
            }
            got = try drainNotifications()
        }
        return got
    }

    // MARK: Helpers

    /// `name` as a double-quoted SQL identifier.
    package static func quoteIdentifier(_ name: String) -> String {
        "\"" + name.replacingAll("\"", with: "\"\"") + "\""
    }

    /// `text` as a single-quoted SQL string literal.
    package static func quoteLiteral(_ text: String) -> String {
        "'" + text.replacingAll("'", with: "''") + "'"
    }

    private func lostConnection(_ c: OpaquePointer) -> DubfarmError {
        let why = String(cString: PQerrorMessage(c)).trimmingTrailingNewlines.oneLine
        return DubfarmError(.unreachable, "lost the connection to PostgreSQL at \(target): \(target.scrub(why))")
    }

    private func consume(_ res: OpaquePointer?, what sql: String) throws -> PostgresRows {
        let c = try live()
        guard let res else {
            if PQstatus(c) != CONNECTION_OK { throw lostConnection(c) }
            let why = String(cString: PQerrorMessage(c)).trimmingTrailingNewlines.oneLine
            throw DubfarmError(.database, "PostgreSQL could not run \(Self.summary(sql)): \(target.scrub(why))")
        }
        defer { PQclear(res) }
        let status = PQresultStatus(res)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            lastSQLState = nil
            let rows = Int(PQntuples(res))
            let cols = Int(PQnfields(res))
            var columns: [String] = []
            columns.reserveCapacity(cols)
            for j in 0..<cols { columns.append(String(cString: PQfname(res, Int32(j)))) }
            var values: [String?] = []
            values.reserveCapacity(rows * cols)
            for i in 0..<rows {
                for j in 0..<cols {
                    if PQgetisnull(res, Int32(i), Int32(j)) == 1 {
                        values.append(nil)
                    } else {
                        values.append(String(cString: PQgetvalue(res, Int32(i), Int32(j))))
                    }
                }
            }
            let tag = String(cString: PQcmdStatus(res))
            let affected = Int(String(cString: PQcmdTuples(res))) ?? rows
            return PostgresRows(columns: columns, values: values, rowCount: rows, affectedRows: affected, commandTag: tag)
        default:
            if PQstatus(c) != CONNECTION_OK { throw lostConnection(c) }
            func field(_ code: Character) -> String? {
                guard let p = PQresultErrorField(res, Int32(code.asciiValue!)) else { return nil }
                return String(cString: p)
            }
            let state = field("C")
            lastSQLState = state
            var message = field("M") ?? String(cString: PQresultErrorMessage(res)).trimmingTrailingNewlines
            if let detail = field("D") { message += " (\(detail))" }
            if let hint = field("H") { message += "; hint: \(hint)" }
            throw DubfarmError(.database,
                               "PostgreSQL refused \(Self.summary(sql)): \(target.scrub(message.oneLine)) [SQLSTATE \(state ?? "?????")]")
        }
    }

    /// The first words of a statement, for messages.
    static func summary(_ sql: String) -> String {
        let words = sql.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).prefix(8).joined(separator: " ")
        return "`" + (words.count > 80 ? String(words.prefix(80)) + "…" : words) + "`"
    }
}

extension String {
    var oneLine: String {
        split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
    }
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let ptrs: [UnsafePointer<CChar>?] = strings.map { UnsafePointer(strdup($0)!) } + [nil]
    defer { for p in ptrs { free(UnsafeMutablePointer(mutating: p)) } }
    return ptrs.withUnsafeBufferPointer { body($0.baseAddress!) }
}
