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
        discussion: "Default: $DUBFARM_COORDINATOR, else the local farm started by `dubfarm local up`, else tcp://127.0.0.1:5556."))
    var coordinator: String?

    @Option(name: .long, help: "Seconds to wait for the coordinator to answer.")
    var timeout: Double = 10

    @Flag(name: .long, help: "Print machine-readable JSON (schema in docs/json-output.md).")
    var json = false

    @OptionGroup var curve: CurveOptions

    /// The endpoint to use, by precedence: flag, environment, local farm, default.
    func endpoint() -> String {
        if let c = coordinator { return normalize(c) }
        if let e = ProcessInfo.processInfo.environment["DUBFARM_COORDINATOR"], !e.isEmpty { return normalize(e) }
        if let local = LocalFarmState.load(directory: LocalFarmState.defaultDirectory()), local.isCoordinatorAlive {
            return local.controlEndpoint
        }
        return "tcp://127.0.0.1:5556"
    }

    func client() throws -> ControlClient {
        try ControlClient(endpoint: endpoint(), timeout: timeout, curve: curve.resolve(fallback: localFarmKeys()))
    }

    /// The local farm's client keys, when the CLI talks to a local farm that has CURVE on.
    private func localFarmKeys() -> (keyFile: String, serverKey: String)? {
        guard coordinator == nil, (ProcessInfo.processInfo.environment["DUBFARM_COORDINATOR"] ?? "").isEmpty,
              let local = LocalFarmState.load(directory: LocalFarmState.defaultDirectory()), local.isCoordinatorAlive,
              let key = local.clientKeyFile, let server = local.serverPublicKey else { return nil }
        return (key, server)
    }

    private func normalize(_ s: String) -> String {
        s.contains("://") ? s : "tcp://\(s)"
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
