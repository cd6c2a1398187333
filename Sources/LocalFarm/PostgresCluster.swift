import DubfarmCore
import Foundation
import Logging
import Postgres

#if canImport(Glibc)
import Glibc
#endif

/// A private PostgreSQL cluster in a directory: the database of a local farm, and of tests.
///
/// The server listens on a unix socket in the cluster's own `socket/` directory (and, if asked,
/// on 127.0.0.1), trusts local connections (`initdb -A trust`), and logs to `postgres.log`.
///
/// PostgreSQL refuses to run as root. When this process is root, the cluster's files belong to
/// the `postgres` user and `initdb`/`pg_ctl` run through `runuser -u postgres`. That user must
/// be able to reach the directory: when it cannot (a directory under `/root`), or when the
/// socket path would be too long for a unix socket, the cluster lives in
/// `/tmp/dubfarm-pg-<hash of the directory>` instead (see ``root`` and ``usesFallback``).
///
/// Every operation is idempotent and serialised across processes by a lock file.
package struct PostgresCluster: Sendable {
    /// The directory asked for.
    package let directory: URL
    /// Where the cluster really lives: ``directory``, or the fallback under `/tmp`.
    package let root: URL
    /// Whether ``root`` is the fallback rather than ``directory``.
    package let usesFallback: Bool
    /// The server's port (also names the socket file).
    package let port: Int
    /// Whether the server also listens on 127.0.0.1:``port``.
    package let listenTCP: Bool
    /// Trade durability for speed (no fsync): for tests only.
    package let ephemeral: Bool
    let binDirectory: URL
    let asRoot: Bool
    let logger: Logger

    package var dataDirectory: URL { root.appendingPathComponent("data") }
    package var socketDirectory: URL { root.appendingPathComponent("socket") }
    package var logFile: URL { root.appendingPathComponent("postgres.log") }

    /// Describes a cluster in `directory`; touches nothing until ``initIfNeeded()``.
    ///
    /// - Parameters:
    ///   - directory: a directory for the cluster alone (when root, it is handed to the
    ///     `postgres` user), e.g. `<farm dir>/postgres`.
    ///   - ephemeral: `fsync=off`, `synchronous_commit=off`: fast and unsafe, for tests.
    ///   - binDirectory: where `initdb`/`pg_ctl` live; found under `/usr/lib/postgresql` when `nil`.
    package init(directory: URL, port: Int = 5432, listenTCP: Bool = false, ephemeral: Bool = false,
                binDirectory: URL? = nil, logger: Logger = Logger(label: "dubfarm.postgres")) throws {
        self.directory = directory.standardizedFileURL
        self.port = port
        self.listenTCP = listenTCP
        self.ephemeral = ephemeral
        self.logger = logger
        self.asRoot = getuid() == 0
        guard let bin = binDirectory ?? Self.findBinDirectory() else {
            throw DubfarmError(.configuration,
                               "PostgreSQL server programs (initdb, pg_ctl) were not found under /usr/lib/postgresql or on PATH; install the postgresql package")
        }
        self.binDirectory = bin
        let wanted = self.directory
        let socketPathLength = wanted.path.utf8.count + "/socket/.s.PGSQL.\(port).lock".utf8.count
        if socketPathLength > 100 || (asRoot && !Self.postgresUserCanReach(wanted)) {
            self.root = URL(fileURLWithPath: "/tmp/dubfarm-pg-\(Self.stableHash(wanted.path))")
            self.usesFallback = true
        } else {
            self.root = wanted
            self.usesFallback = false
        }
    }

    /// The URL of `database` in this cluster (as the `postgres` superuser, over the socket).
    package func url(database: String) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+")
        let host = socketDirectory.path.addingPercentEncoding(withAllowedCharacters: allowed) ?? socketDirectory.path
        let db = database.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? database
        return "postgresql://postgres@/\(db)?host=\(host)&port=\(port)"
    }

    // MARK: Life cycle

    /// Creates the cluster unless it exists. Returns whether it created one.
    /// A half-created cluster (a crash during `initdb`) is removed and created again.
    @discardableResult
    package func initIfNeeded() throws -> Bool {
        try withLock { try initLocked() }
    }

    /// Starts the server unless it runs (waiting until it accepts connections); creates the
    /// cluster first if needed. A stale pid file from a crashed server is handled by PostgreSQL.
    package func start() throws {
        try withLock {
            _ = try initLocked()
            guard !runningLocked() else { return }
            if usesFallback {
                logger.info("PostgreSQL cluster for \(directory.path) lives in \(root.path) (the postgres user cannot use the directory itself)")
            }
            let r = try run("pg_ctl", ["-D", dataDirectory.path, "-l", logFile.path, "-w", "-t", "60", "start"])
            guard r.status == 0 else {
                throw DubfarmError(.io, "PostgreSQL in \(dataDirectory.path) did not start: \(r.output.oneLine). Log: \(logTail())")
            }
        }
    }

    /// Stops the server (fast shutdown: open sessions are ended) if it runs.
    package func stop() throws {
        try withLock {
            guard runningLocked() else { return }
            let r = try run("pg_ctl", ["-D", dataDirectory.path, "-m", "fast", "-w", "-t", "60", "stop"])
            guard r.status == 0 || !runningLocked() else {
                throw DubfarmError(.io, "PostgreSQL in \(dataDirectory.path) did not stop: \(r.output.oneLine)")
            }
        }
    }

    /// Whether the server runs.
    package var isRunning: Bool { runningLocked() }

    /// Creates `name` unless it exists. Returns whether it created it.
    @discardableResult
    package func createDatabase(_ name: String) throws -> Bool {
        let c = try PostgresConnection(url: url(database: "postgres"))
        if try c.query("SELECT 1 FROM pg_database WHERE datname = $1", [.text(name)]).count > 0 { return false }
        do {
            try c.query("CREATE DATABASE \(PostgresConnection.quoteIdentifier(name))")
            return true
        } catch let e as DubfarmError where c.lastSQLState == "42P04" {  // created meanwhile
            _ = e
            return false
        }
    }

    /// Drops `name` if it exists, ending its sessions.
    package func dropDatabase(_ name: String) throws {
        let c = try PostgresConnection(url: url(database: "postgres"))
        try c.query("DROP DATABASE IF EXISTS \(PostgresConnection.quoteIdentifier(name)) WITH (FORCE)")
    }

    // MARK: Internals

    private func initLocked() throws -> Bool {
        let fm = FileManager.default
        if fm.fileExists(atPath: dataDirectory.appendingPathComponent("PG_VERSION").path) { return false }
        if fm.fileExists(atPath: dataDirectory.path) {
            logger.warning("removing the half-created PostgreSQL cluster in \(dataDirectory.path)")
            try fm.removeItem(at: dataDirectory)
        }
        try fm.createDirectory(at: socketDirectory, withIntermediateDirectories: true)
        try fm.createDirectory(at: dataDirectory, withIntermediateDirectories: true)
        if asRoot {
            let r = try runDirect("/bin/chown", ["-R", "postgres:postgres", root.path])
            guard r.status == 0 else {
                throw DubfarmError(.io, "cannot hand \(root.path) to the postgres user: \(r.output.oneLine)")
            }
        }
        try? fm.setAttributes([.posixPermissions: 0o700], ofItemAtPath: dataDirectory.path)
        var args = ["-D", dataDirectory.path, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]
        if ephemeral { args.append("--no-sync") }
        let r = try run("initdb", args)
        guard r.status == 0 else {
            throw DubfarmError(.io, "initdb failed for \(dataDirectory.path): \(r.output.oneLine)")
        }
        var conf = """

            # dubfarm
            port = \(port)
            listen_addresses = '\(listenTCP ? "127.0.0.1" : "")'
            unix_socket_directories = '\(socketDirectory.path)'
            max_connections = 200
            shared_buffers = 64MB

            """
        if ephemeral {
            conf += "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        }
        let confFile = dataDirectory.appendingPathComponent("postgresql.conf")
        let handle = try FileHandle(forWritingTo: confFile)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(conf.utf8))
        try handle.close()
        return true
    }

    private func runningLocked() -> Bool {
        guard FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("PG_VERSION").path) else {
            return false
        }
        return (try? run("pg_ctl", ["-D", dataDirectory.path, "status"]).status) == 0
    }

    private func logTail() -> String {
        guard let data = FileManager.default.contents(atPath: logFile.path) else { return "(no log at \(logFile.path))" }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n").suffix(5)
        return lines.joined(separator: " | ")
    }

    /// Serialises cluster operations of all processes on this machine.
    private func withLock<T>(_ body: () throws -> T) throws -> T {
        let lockPath = root.path + ".lock"
        try? FileManager.default.createDirectory(at: root.deletingLastPathComponent(), withIntermediateDirectories: true)
        let fd = open(lockPath, O_CREAT | O_RDWR, 0o666)
        guard fd >= 0 else {
            throw DubfarmError(.io, "cannot open the lock file \(lockPath): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else {
                throw DubfarmError(.io, "cannot lock \(lockPath): \(String(cString: strerror(errno)))")
            }
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    struct CommandResult {
        var status: Int32
        var output: String
    }

    /// Runs a PostgreSQL program, as the postgres user when this process is root.
    private func run(_ program: String, _ args: [String]) throws -> CommandResult {
        let exe = binDirectory.appendingPathComponent(program).path
        if asRoot {
            return try runDirect(Self.runuser, ["-u", "postgres", "--", exe] + args)
        }
        return try runDirect(exe, args)
    }

    private func runDirect(_ exe: String, _ args: [String]) throws -> CommandResult {
        try Self.spawnAndWait(exe, args)
    }

    /// Runs `exe` from /tmp (the postgres user may not be allowed into our directory).
    static func spawnAndWait(_ exe: String, _ args: [String]) throws -> CommandResult {
        let r = try ProcessControl.run(exe, args, directory: "/tmp")
        return CommandResult(status: r.status, output: r.stdout + r.stderr)
    }

    static var runuser: String {
        FileManager.default.isExecutableFile(atPath: "/usr/sbin/runuser") ? "/usr/sbin/runuser" : "/sbin/runuser"
    }

    static func findBinDirectory() -> URL? {
        let fm = FileManager.default
        let base = "/usr/lib/postgresql"
        if let versions = try? fm.contentsOfDirectory(atPath: base) {
            for v in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
                let dir = "\(base)/\(v)/bin"
                if fm.isExecutableFile(atPath: dir + "/initdb") { return URL(fileURLWithPath: dir) }
            }
        }
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            if fm.isExecutableFile(atPath: "\(dir)/initdb") { return URL(fileURLWithPath: String(dir)) }
        }
        return nil
    }

    /// Whether the `postgres` user can reach `dir` (or, if it does not exist yet, its nearest
    /// existing ancestor).
    static func postgresUserCanReach(_ dir: URL) -> Bool {
        var probe = dir
        while !FileManager.default.fileExists(atPath: probe.path) && probe.path != "/" {
            probe = probe.deletingLastPathComponent()
        }
        let r = try? spawnAndWait(runuser, ["-u", "postgres", "--", "/usr/bin/test", "-x", probe.path])
        return r?.status == 0
    }

    /// FNV-1a, stable across runs (unlike `hashValue`).
    static func stableHash(_ s: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return String(h >> 16, radix: 16)
    }
}

extension String {
    fileprivate var oneLine: String {
        split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
    }
}
