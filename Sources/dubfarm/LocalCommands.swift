import ArgumentParser
import Dubbing
import DubfarmCore
import FarmClient
import FarmProtocol
import FarmStore
import Foundation
import LocalFarm
import Logging
import Monitoring
import FarmSecurity
import ZeroMQ

struct LocalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "local",
        abstract: "Run a private farm on this machine: its own PostgreSQL, a coordinator and workers.",
        discussion: """
            Everything lives in one directory (default ./.farm, or --dir, or $DUBFARM_LOCAL_DIR): \
            the PostgreSQL cluster, the media store, logs/ and farm.json. Other dubfarm commands \
            find the local coordinator by themselves. Running `local up` again is harmless.
            """,
        subcommands: [Up.self, LocalStatus.self, Down.self])

    struct DirOption: ParsableArguments {
        @Option(name: .long, help: "The farm's directory.") var dir: String?
        var url: URL { dir.map { URL(fileURLWithPath: $0).standardizedFileURL } ?? LocalFarmState.defaultDirectory() }
    }

    struct Up: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start the local farm (initialising it on first use) and print the coordinator's address.")
        @OptionGroup var dir: DirOption
        @Option(name: .long, help: "Number of workers.") var workers: Int = 2
        @Option(name: .long, help: "Threads per worker.") var threads: Int = 1
        @Option(name: .long, help: "Stage the workers run (and the coordinator's default): dub, passthrough.") var stage: String = "dub"
        @Option(name: .long, help: "Dub workers' model: weights directory or untrained:tiny|small|paper. Default: $DUBFARM_MODEL, else the bundled trained models/dubfarm-small.")
        var model: String?
        @Flag(name: .long, help: "The workers also personalise jobs (submit --personalise): they run the trainer from training/ in the repository's .venv (make py-deps).")
        var personalise = false

        func run() async throws {
            let root = dir.url
            // Found now, so a missing model fails here rather than in every worker's log.
            if stage == "dub" { _ = try resolveDubModel(model) }
            let logs = root.appendingPathComponent("logs")
            try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
            if var state = LocalFarmState.load(directory: root), state.isCoordinatorAlive {
                // Already up: top the workers up to the requested number.
                let missing = workers - state.aliveWorkers.count
                if missing > 0 {
                    let started = try startWorkers(missing, state: state, logs: logs, offset: state.workerNames.count)
                    let alive = zip(state.workerPIDs, state.workerNames).filter { ProcessControl.isAlive($0.0) }
                    state.workerPIDs = alive.map(\.0) + started.map(\.0)
                    state.workerNames = alive.map(\.1) + started.map(\.1)
                    try state.save()
                }
                print("local farm already running (\(state.aliveWorkers.count) workers)")
                Self.printAddresses(state, logs: logs)
                return
            }
            let previous = LocalFarmState.load(directory: root)
            print("starting PostgreSQL…")
            let cluster = try Self.cluster(in: root, preferredPort: previous?.postgresPort)
            if try cluster.initIfNeeded() { print("  initialised a new cluster in \(cluster.root.path)") }
            if !cluster.isRunning { try cluster.start() }
            _ = try cluster.createDatabase("dubfarm")
            let dbURL = cluster.url(database: "dubfarm")

            let logger = bootstrapLogging(level: "warning")
            let store = FarmStore(url: dbURL, actor: "dubfarm local up", logger: logger)
            try await store.connect(retryFor: 20)
            let applied = try await store.migrate()
            await store.close()
            if !applied.isEmpty { print("  applied \(applied.count) migration(s)") }

            let keys = try LocalKeys.ensure(in: root)
            // The previous run's addresses while they are free: workers it started that are still
            // running (their coordinator was killed) reconnect to them by themselves.
            func reuse(_ endpoint: String?) -> String? {
                guard let endpoint, let port = endpoint.split(separator: ":").last.flatMap({ Int($0) }), ProcessControl.isPortFree(port) else { return nil }
                return endpoint
            }
            let work = reuse(previous?.workEndpoint) ?? "tcp://127.0.0.1:\(ProcessControl.freePort())"
            let control = reuse(previous?.controlEndpoint) ?? "tcp://127.0.0.1:\(ProcessControl.freePort())"
            // Its own dashboard port, so two local farms on one machine do not fight over 9464.
            let metricsPort = previous?.metricsPort.flatMap { ProcessControl.isPortFree($0) ? $0 : nil } ?? ProcessControl.freePort()
            let configFile = root.appendingPathComponent("coordinator.yml")
            try """
                # Written by `dubfarm local up`.
                coordinator:
                  work_endpoint: "\(work)"
                  control_endpoint: "\(control)"
                  default_stage: \(stage)
                database:
                  url: "\(dbURL)"
                media:
                  store: "\(root.appendingPathComponent("store").path)"
                metrics:
                  listen: "127.0.0.1:\(metricsPort)"
                dashboard:
                  users_file: "\(try LocalDashboardUser.ensure(in: root).usersFile)"
                security:
                  secret_key_file: "\(keys.coordinatorSecret)"
                  authorized_workers: "\(keys.workersDirectory)"
                  authorized_clients: "\(keys.clientsDirectory)"
                """.write(to: configFile, atomically: true, encoding: .utf8)

            // What an earlier run started and is still running (its coordinator was killed, or
            // farm.json lost track of it): a coordinator is stopped; workers connected to this
            // run's work endpoint are adopted, the others stopped.
            let leftovers = LocalFarmState.processes(directory: root.path)
            for p in leftovers where p.arguments.dropFirst().first == "coordinator" {
                ProcessControl.stop(p.pid, grace: 15)
                print("stopped a coordinator left running by an earlier `local up` (pid \(p.pid))")
            }
            var adopted: [(Int32, String)] = []
            for p in leftovers where p.arguments.dropFirst().first == "worker" {
                let args = p.arguments
                let connect = args.firstIndex(of: "--connect").flatMap { args.indices.contains($0 + 1) ? args[$0 + 1] : nil }
                let name = args.firstIndex(of: "--name").flatMap { args.indices.contains($0 + 1) ? args[$0 + 1] : nil }
                if connect == work, let name {
                    adopted.append((p.pid, name))
                } else {
                    ProcessControl.stop(p.pid, grace: 15)
                    print("stopped worker \(name ?? "pid \(p.pid)") left running by an earlier `local up` (it served another address)")
                }
            }

            print("starting the coordinator…")
            let ready = root.appendingPathComponent("coordinator.ready")
            try? FileManager.default.removeItem(at: ready)
            let exe = ProcessControl.currentExecutable
            let pid = try ProcessControl.spawnDetached(exe, ["coordinator", "--config", configFile.path, "--ready-file", ready.path],
                                                       log: logs.appendingPathComponent("coordinator.log"),
                                                       environment: LocalFarmState.environment(directory: root.path))
            let deadline = Date().addingTimeInterval(30)
            while !FileManager.default.fileExists(atPath: ready.path) {
                guard ProcessControl.isAlive(pid), Date() < deadline else {
                    let tail = (try? String(contentsOf: logs.appendingPathComponent("coordinator.log"), encoding: .utf8))?
                        .split(separator: "\n").suffix(10).joined(separator: "\n") ?? ""
                    throw DubfarmError(.unreachable, "the coordinator did not start; its log (\(logs.path)/coordinator.log) ends with:\n\(tail)")
                }
                usleep(50_000)
            }
            var state = LocalFarmState(directory: root.path, databaseURL: dbURL, postgresPort: cluster.port, workEndpoint: work,
                                       controlEndpoint: control, coordinatorPID: pid, workerPIDs: adopted.map(\.0), workerNames: adopted.map(\.1))
            state.clientKeyFile = keys.clientSecret
            state.serverPublicKey = keys.coordinatorPublic
            state.metricsPort = metricsPort
            try state.save()
            if !adopted.isEmpty {
                print("adopted \(adopted.count) worker(s) still running from before: \(adopted.map(\.1).joined(separator: ", "))")
            }
            let missing = max(0, workers - adopted.count)
            if missing > 0 {
                print("starting \(missing) worker(s)…")
                // Names after the highest in use (local-3 when local-1 and local-2 were adopted).
                let used = adopted.compactMap { Int($0.1.split(separator: "-").last ?? "") }.max() ?? 0
                let started = try startWorkers(missing, state: state, logs: logs, offset: used)
                state.workerPIDs += started.map(\.0)
                state.workerNames += started.map(\.1)
                try state.save()
            }
            print("local farm is up")
            Self.printAddresses(state, logs: logs)
        }

        static func printAddresses(_ state: LocalFarmState, logs: URL) {
            print("coordinator: \(state.controlEndpoint)")
            if let d = state.dashboardURL {
                let login = LocalDashboardUser(root: URL(fileURLWithPath: state.directory))
                print("dashboard:   \(d)  (to act on jobs, log in as \(LocalDashboardUser.name) with the password in \(login.passwordFile))")
                print("metrics:     \(d)metrics")
            }
            print("logs:        \(logs.path)")
        }

        /// The farm's cluster. An existing cluster keeps the port written in its configuration (a
        /// farm whose first start failed half-way has no farm.json to remember it).
        static func cluster(in root: URL, preferredPort: Int?) throws -> PostgresCluster {
            let probe = try PostgresCluster(directory: root.appendingPathComponent("postgres"), port: preferredPort ?? 0)
            let conf = probe.dataDirectory.appendingPathComponent("postgresql.conf")
            if let text = try? String(contentsOf: conf, encoding: .utf8),
               let line = text.split(separator: "\n").last(where: { $0.hasPrefix("port = ") }),
               let port = Int(line.dropFirst("port = ".count).trimmingCharacters(in: .whitespaces)) {
                return try PostgresCluster(directory: root.appendingPathComponent("postgres"), port: port)
            }
            return try PostgresCluster(directory: root.appendingPathComponent("postgres"), port: preferredPort ?? ProcessControl.freePort())
        }

        func startWorkers(_ n: Int, state: LocalFarmState, logs: URL, offset: Int) throws -> [(Int32, String)] {
            let exe = ProcessControl.currentExecutable
            return try (0..<n).map { i in
                let name = "local-\(offset + i + 1)"
                var args = ["worker", "--connect", state.workEndpoint, "--name", name, "--threads", "\(threads)", "--stage", stage]
                if stage == "dub" { args += ["--model", try resolveDubModel(model).spec.description] }
                if personalise { args.append("--personalise") }
                if let server = state.serverPublicKey {
                    let keys = LocalKeys(root: URL(fileURLWithPath: state.directory))
                    args += ["--key-file", keys.workerSecret, "--server-key", server]
                }
                let pid = try ProcessControl.spawnDetached(
                    exe, args,
                    log: logs.appendingPathComponent("\(name).log"),
                    environment: LocalFarmState.environment(directory: state.directory))
                return (pid, name)
            }
        }
    }

    struct LocalStatus: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "status", abstract: "Show what the local farm runs.")
        @OptionGroup var dir: DirOption
        @Flag(name: .long, help: "Print JSON.") var json = false

        func run() throws {
            guard let state = LocalFarmState.load(directory: dir.url) else {
                if json { try printJSON(["running": false]) } else { print("no local farm in \(dir.url.path) (start one with `dubfarm local up`)") }
                return
            }
            if json { return try printJSON(state) }
            func alive(_ p: Int32) -> String { ProcessControl.isAlive(p) ? "running" : "stopped" }
            print("local farm in \(state.directory)")
            print("  postgres     port \(state.postgresPort)")
            print("  coordinator  pid \(state.coordinatorPID)  \(alive(state.coordinatorPID))  \(state.controlEndpoint)")
            if let d = state.dashboardURL { print("  dashboard    \(d)") }
            for (pid, name) in zip(state.workerPIDs, state.workerNames) {
                print("  worker       pid \(pid)  \(alive(pid))  \(name)")
            }
        }
    }

    struct Down: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop everything the local farm started (data is kept).")
        @OptionGroup var dir: DirOption

        func run() throws {
            guard let state = LocalFarmState.load(directory: dir.url) else {
                print("no local farm in \(dir.url.path)")
                return
            }
            if state.coordinatorPID == 0 && state.workerPIDs.isEmpty {
                print("local farm in \(dir.url.path) is not running")
            }
            for (pid, name) in zip(state.workerPIDs, state.workerNames) where ProcessControl.isAlive(pid) {
                if ProcessControl.stop(pid, grace: 15) { print("worker \(name) had to be killed") } else { print("stopped worker \(name)") }
            }
            if ProcessControl.isAlive(state.coordinatorPID) {
                ProcessControl.stop(state.coordinatorPID, grace: 15)
                print("stopped the coordinator")
            }
            // Whatever an earlier run started and lost track of (marked in its environment):
            // workers first, then coordinators, then anything they started.
            let leftovers = LocalFarmState.processes(directory: state.directory)
            let order = { (p: (pid: Int32, arguments: [String])) -> Int in
                switch p.arguments.dropFirst().first { case "worker": return 0; case "coordinator": return 1; default: return 2 }
            }
            for p in leftovers.sorted(by: { order($0) < order($1) }) where ProcessControl.isAlive(p.pid) {
                ProcessControl.stop(p.pid, grace: 15)
                print("stopped \(p.arguments.dropFirst().first ?? "a process") (pid \(p.pid)) left running by an earlier `local up`")
            }
            let cluster = try PostgresCluster(directory: URL(fileURLWithPath: state.directory).appendingPathComponent("postgres"),
                                              port: state.postgresPort)
            if cluster.isRunning {
                try cluster.stop()
                print("stopped PostgreSQL")
            }
            // Keep the record (the cluster's port is fixed in its configuration); mark nothing running.
            var stopped = state
            stopped.coordinatorPID = 0
            stopped.workerPIDs = []
            stopped.workerNames = []
            try stopped.save()
            print("local farm is down")
        }
    }
}

/// The local farm's CURVE keys (`DIR/keys`): the coordinator's pair, one pair for its workers
/// (`keys/workers`, the workers' allow-list) and one for the CLI (`keys/clients`). Made once, on
/// the first `local up`.
struct LocalKeys {
    let root: URL
    var directory: String { root.appendingPathComponent("keys").path }
    var coordinatorSecret: String { directory + "/coordinator.key_secret" }
    var coordinatorPublic: String { directory + "/coordinator.key" }
    var workersDirectory: String { directory + "/workers" }
    var workerSecret: String { workersDirectory + "/worker.key_secret" }
    var clientsDirectory: String { directory + "/clients" }
    var clientSecret: String { clientsDirectory + "/client.key_secret" }

    static func ensure(in root: URL) throws -> LocalKeys {
        let k = LocalKeys(root: root)
        for (dir, name, secret) in [(k.directory, "coordinator", k.coordinatorSecret), (k.workersDirectory, "worker", k.workerSecret),
                                    (k.clientsDirectory, "client", k.clientSecret)] where !FileManager.default.fileExists(atPath: secret) {
            try? FileManager.default.removeItem(atPath: (dir as NSString).appendingPathComponent("\(name).key"))
            try KeyFiles.write(try CurveKeyPair.generate(), name: name, directory: dir)
        }
        return k
    }
}

/// The local farm's dashboard user (`admin`), made on the first `local up`: a random password in
/// `DIR/dashboard-password` (readable by the owner only) and its bcrypt line in
/// `DIR/dashboard-users` (the coordinator's dashboard.users_file).
struct LocalDashboardUser {
    static let name = "admin"
    let root: URL
    var passwordFile: String { root.appendingPathComponent("dashboard-password").path }
    var usersFile: String { root.appendingPathComponent("dashboard-users").path }

    static func ensure(in root: URL) throws -> LocalDashboardUser {
        let u = LocalDashboardUser(root: root)
        if FileManager.default.fileExists(atPath: u.usersFile) && FileManager.default.fileExists(atPath: u.passwordFile) { return u }
        let password = (0..<12).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        guard FileManager.default.createFile(atPath: u.passwordFile, contents: Data((password + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw DubfarmError(.io, "cannot write \(u.passwordFile)")
        }
        try "\(name):\(DashboardAuth.hash(password))\n".write(toFile: u.usersFile, atomically: true, encoding: .utf8)
        return u
    }
}
