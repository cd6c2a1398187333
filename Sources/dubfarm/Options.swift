import ArgumentParser
import DubfarmCore
import FarmClient
import FarmConfig
import Foundation
import LocalFarm
import Logging

/// How the CLI finds the coordinator.
struct ClientOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "The coordinator's control endpoint (tcp://HOST:5556).",
        discussion: "Default: $DUBFARM_COORDINATOR, else `coordinator` in the client config file, else the local farm started by `dubfarm local up`, else tcp://127.0.0.1:5556."))
    var coordinator: String?

    @Option(name: .long, help: ArgumentHelp("Seconds to wait for the coordinator to answer.", discussion: "Default: `timeout` in the client config file, else 10."))
    var timeout: Double?

    @Flag(name: .long, help: "Print machine-readable JSON (schema in docs/json-output.md).")
    var json = false

    @OptionGroup var curve: CurveOptions

    /// The client config file (`~/.config/dubfarm/client.yml`, or $DUBFARM_CLIENT_CONFIG), if any.
    func configFile() throws -> ClientConfigFile? {
        guard let path = ClientConfigFile.defaultPath(environment: ProcessInfo.processInfo.environment) else { return nil }
        return try ClientConfigFile.load(path: path)
    }

    /// The endpoint to use, by precedence: flag, environment, client config file, local farm, default.
    func endpoint(config: ClientConfigFile? = nil) -> String {
        if let c = coordinator { return normalize(c) }
        if let e = ProcessInfo.processInfo.environment["DUBFARM_COORDINATOR"], !e.isEmpty { return normalize(e) }
        if let c = config?.coordinator, !c.isEmpty { return normalize(c) }
        if let local = LocalFarmState.load(directory: LocalFarmState.defaultDirectory()), local.isCoordinatorAlive {
            return local.controlEndpoint
        }
        return "tcp://127.0.0.1:5556"
    }

    func client() throws -> ControlClient {
        let config = try configFile()
        let endpoint = endpoint(config: config)
        return try ControlClient(endpoint: endpoint, timeout: timeout ?? config?.timeout ?? 10,
                                 curve: curve.resolve(config: config, fallback: localFarmKeys(config: config)))
    }

    /// A connection for commands that wait on jobs: it reconnects (finding the coordinator again
    /// the same way) for up to `patience` seconds when the coordinator goes away.
    func reconnectingClient(patience: Double?) throws -> ReconnectingClient {
        let config = try configFile()
        let json = self.json
        return try ReconnectingClient(patience: patience ?? config?.reconnectSeconds ?? ReconnectOption.defaultSeconds,
                                      notice: { line in
                                          if stdoutIsTerminal && !json { print("") }
                                          FileHandle.standardError.write(Data("dubfarm: \(line)\n".utf8))
                                      },
                                      connect: { try client() })
    }

    /// The local farm's client keys, when the CLI talks to a local farm that has CURVE on.
    private func localFarmKeys(config: ClientConfigFile?) -> (keyFile: String, serverKey: String)? {
        guard coordinator == nil, (ProcessInfo.processInfo.environment["DUBFARM_COORDINATOR"] ?? "").isEmpty, config?.coordinator == nil,
              let local = LocalFarmState.load(directory: LocalFarmState.defaultDirectory()), local.isCoordinatorAlive,
              let key = local.clientKeyFile, let server = local.serverPublicKey else { return nil }
        return (key, server)
    }

    private func normalize(_ s: String) -> String {
        s.contains("://") ? s : "tcp://\(s)"
    }
}

/// `--reconnect SECONDS` of the commands that wait on jobs.
struct ReconnectOption: ParsableArguments {
    static let defaultSeconds = 600.0

    @Option(name: .long, help: ArgumentHelp(
        "Seconds to keep reconnecting when the coordinator goes away while waiting (0: give up at once).",
        discussion: "The farm finishes the job without the coordinator's client; a coordinator that is back within this time (restarted, or a new `local up`) is found again and the wait goes on. Default: `reconnect_seconds` in the client config file, else 600.",
        valueName: "SECONDS"))
    var reconnect: Double?

    func validate() throws {
        if let r = reconnect, !(r >= 0 && r.isFinite) { throw ValidationError("--reconnect takes seconds, 0 or more") }
    }
}

/// `--config FILE` for commands that read the coordinator's configuration.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The coordinator's configuration file.", discussion: "Default: ./coordinator.yml when it exists. DUBFARM_* variables override it."))
    var config: String?

    func load() throws -> ConfigurationLoader {
        var file = config
        if file == nil, FileManager.default.fileExists(atPath: "coordinator.yml") { file = "coordinator.yml" }
        return try ConfigurationLoader.load(file: file)
    }
}

/// Sets up swift-log once: human-readable lines on stderr.
func bootstrapLogging(level: String) -> Logger {
    let lvl = Logger.Level(rawValue: level) ?? .info
    LoggingSystem.bootstrap { label in
        var h = StreamLogHandler.standardError(label: label)
        h.logLevel = lvl
        return h
    }
    var l = Logger(label: "dubfarm")
    l.logLevel = lvl
    return l
}

/// Prints `value` as pretty JSON.
func printJSON<T: Encodable>(_ value: T) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys]
    e.dateEncodingStrategy = .iso8601
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

/// Prints `value` as compact JSON on one line (for streams: `logs --json`, `top --json`).
func printJSONLine<T: Encodable>(_ value: T) throws {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    e.dateEncodingStrategy = .iso8601
    print(String(decoding: try e.encode(value), as: UTF8.self))
}

/// Whether stdout is a terminal (progress bars) or a pipe (plain lines).
var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) != 0 }
