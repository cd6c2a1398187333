import DubfarmCore
import Foundation
import Glibc

/// What `dubfarm local up` started, saved as `farm.json` in the farm directory so `status`,
/// `down` and the CLI's default coordinator address find it again.
package struct LocalFarmState: Codable, Sendable, Hashable {
    package var directory: String
    package var databaseURL: String
    package var postgresPort: Int
    package var workEndpoint: String
    package var controlEndpoint: String
    package var coordinatorPID: Int32
    package var workerPIDs: [Int32]
    package var workerNames: [String]
    /// CURVE: the CLI's secret key file for this farm (`nil`: the farm runs plaintext).
    package var clientKeyFile: String?
    /// CURVE: the coordinator's public key file.
    package var serverPublicKey: String?
    /// The coordinator's dashboard and metrics port on 127.0.0.1 (nil: a farm.json from before).
    package var metricsPort: Int?

    package init(directory: String, databaseURL: String, postgresPort: Int, workEndpoint: String, controlEndpoint: String,
                coordinatorPID: Int32, workerPIDs: [Int32], workerNames: [String]) {
        self.directory = directory
        self.databaseURL = databaseURL
        self.postgresPort = postgresPort
        self.workEndpoint = workEndpoint
        self.controlEndpoint = controlEndpoint
        self.coordinatorPID = coordinatorPID
        self.workerPIDs = workerPIDs
        self.workerNames = workerNames
    }

    /// `$DUBFARM_LOCAL_DIR`, else `./.farm`.
    package static func defaultDirectory() -> URL {
        if let d = ProcessInfo.processInfo.environment["DUBFARM_LOCAL_DIR"], !d.isEmpty { return URL(fileURLWithPath: d) }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".farm")
    }

    package static func file(in directory: URL) -> URL { directory.appendingPathComponent("farm.json") }

    package static func load(directory: URL) -> LocalFarmState? {
        guard let data = FileManager.default.contents(atPath: file(in: directory).path) else { return nil }
        return try? JSONDecoder().decode(LocalFarmState.self, from: data)
    }

    package func save() throws {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys]
        let url = Self.file(in: URL(fileURLWithPath: directory))
        try e.encode(self).write(to: url, options: .atomic)
    }

    package var isCoordinatorAlive: Bool { ProcessControl.isAlive(coordinatorPID) }
    package var aliveWorkers: [Int32] { workerPIDs.filter(ProcessControl.isAlive) }

    /// The dashboard's address, when the farm has one.
    package var dashboardURL: String? { metricsPort.map { "http://127.0.0.1:\($0)/" } }

    /// The variable every process `local up` starts carries (the farm's directory), so that the
    /// farm finds what it started even when farm.json lost track of it.
    package static let processMarker = "DUBFARM_LOCAL_FARM"

    /// The environment for a process of the farm in `directory`.
    package static func environment(directory: String, base: [String: String] = ProcessInfo.processInfo.environment) -> [String: String] {
        var env = base
        env[processMarker] = directory
        return env
    }

    /// Live processes started by the farm in `directory` (`local up`, any earlier run too), found
    /// by their environment: pid and command line.
    package static func processes(directory: String) -> [(pid: Int32, arguments: [String])] {
        let wanted = Array("\(processMarker)=\(directory)".utf8)
        let me = getpid()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        var found: [(Int32, [String])] = []
        for entry in entries {
            guard let pid = Int32(entry), pid != me, ProcessControl.isAlive(pid),
                  let environ = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { continue }
            guard environ.split(separator: 0).contains(where: { Array($0) == wanted }) else { continue }
            let args = (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data())
                .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            found.append((pid, args))
        }
        return found.sorted { $0.0 < $1.0 }
    }
}

/// Starting and stopping background processes by pid.
package enum ProcessControl {
    /// Whether `pid` is a live process (not a zombie).
    package static func isAlive(_ pid: Int32) -> Bool {
        guard pid > 0, kill(pid, 0) == 0 || errno == EPERM else { return false }
        // A zombie still answers kill(0); look at its state.
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
           let close = stat.lastIndex(of: ")") {
            let state = stat[stat.index(close, offsetBy: 2)]
            return state != "Z" && state != "X"
        }
        return true
    }

    /// The running executable's path (`/proc/self/exe`).
    package static var currentExecutable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }

    /// Starts `arguments` in a session of its own (it outlives the terminal and the caller), with
    /// stdin from /dev/null and stdout and stderr appended to `log`. Returns its pid.
    package static func spawnDetached(_ executable: String, _ arguments: [String], log: URL,
                                     environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log.path, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // The child starts with no signal blocked and SIGTERM/SIGINT at their defaults: the
        // spawning process may block them (a test runner, a thread that waits on signalfd), and
        // a blocked SIGTERM would never stop a child that does not unblock it itself.
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGINT)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        // POSIX_SPAWN_SETSID (glibc ≥ 2.26) is not imported by Swift; its value is 0x80.
        posix_spawnattr_setflags(&attr, Int16(0x80) | Int16(POSIX_SPAWN_SETSIGMASK) | Int16(POSIX_SPAWN_SETSIGDEF))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attr, argv, envp)
        guard rc == 0 else {
            throw DubfarmError(.io, "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        return pid
    }

    /// What ``run(_:_:directory:environment:timeout:)`` saw.
    package struct Outcome: Sendable {
        /// Exit status; 128 + signal when killed by one.
        package var status: Int32
        package var stdout: String
        package var stderr: String
        package var timedOut: Bool
    }

    /// Runs a program to completion: posix_spawn, output collected in temporary files, a
    /// `waitpid` on the calling thread. Foundation's `Process` was seen to miss children's exits
    /// on Linux, and a daemon the program starts (`pg_ctl start`) must not hold a pipe open.
    package static func run(_ executable: String, _ arguments: [String], directory: String? = nil,
                           environment: [String: String] = ProcessInfo.processInfo.environment,
                           timeout: Double? = nil) throws -> Outcome {
        func tempFile(_ tag: String) throws -> (Int32, String) {
            var template = Array("/tmp/dubfarm-\(tag)-XXXXXX".utf8CString)
            let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard fd >= 0 else { throw DubfarmError(.io, "cannot create a temporary file: \(String(cString: strerror(errno)))") }
            return (fd, String(decoding: template.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        let (outFD, outPath) = try tempFile("out")
        let (errFD, errPath) = try tempFile("err")
        defer {
            close(outFD); unlink(outPath)
            close(errFD); unlink(errPath)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, outFD, 1)
        posix_spawn_file_actions_adddup2(&actions, errFD, 2)
        // `env -C DIR` changes directory first (posix_spawn's chdir action is not imported).
        let launch = directory.map { ["/usr/bin/env", "-C", $0, executable] } ?? [executable]
        let argv = (launch + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, launch[0], &actions, nil, argv, envp)
        guard rc == 0 else { throw DubfarmError(.io, "cannot run \(executable): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        var timedOut = false
        if let timeout {
            let deadline = Date().addingTimeInterval(timeout)
            while waitpid(pid, &status, WNOHANG) == 0 {
                if Date() > deadline {
                    timedOut = true
                    kill(pid, SIGKILL)
                    waitpid(pid, &status, 0)
                    break
                }
                usleep(10_000)
            }
        } else {
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        let code: Int32 = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        let read = { (p: String) in (try? String(contentsOfFile: p, encoding: .utf8)) ?? "" }
        return Outcome(status: code, stdout: read(outPath), stderr: read(errPath), timedOut: timedOut)
    }

    /// Sends SIGTERM, waits up to `grace` seconds, then SIGKILL. Returns whether it had to kill.
    @discardableResult
    package static func stop(_ pid: Int32, grace: Double) -> Bool {
        guard isAlive(pid) else { return false }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline {
            reap(pid)
            if !isAlive(pid) { return false }
            usleep(50_000)
        }
        kill(pid, SIGKILL)
        usleep(100_000)
        reap(pid)
        return true
    }

    /// Collects `pid`'s exit status if it is our child (no zombie left behind).
    package static func reap(_ pid: Int32) {
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// Whether `port` on 127.0.0.1 can be bound right now (nobody listens on it).
    package static func isPortFree(_ port: Int) -> Bool {
        guard (1...65535).contains(port) else { return false }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        return rc == 0
    }

    /// A TCP port on 127.0.0.1 that is free right now.
    package static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
