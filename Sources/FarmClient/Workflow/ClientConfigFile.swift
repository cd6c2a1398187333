import DubfarmCore
import Foundation
import Yams

/// The command line's own settings file (`~/.config/dubfarm/client.yml`): which coordinator to
/// talk to and how, so that they need not be repeated on every command.
///
/// ```yaml
/// coordinator: tcp://farm.example:5556
/// key_file: keys/me.key_secret        # relative to this file's directory
/// server_key: keys/coordinator.key    # a public key (40 characters of Z85) or its file
/// timeout: 10                         # seconds to wait for an answer
/// reconnect_seconds: 120              # how long `wait` and `submit --wait` retry a coordinator that went away
/// ```
package struct ClientConfigFile: Equatable, Sendable {
    /// The coordinator's control endpoint (`coordinator`).
    package var coordinator: String?
    /// This machine's CURVE secret key file (`key_file`), resolved against the file's directory.
    package var keyFile: String?
    /// The coordinator's CURVE public key, or its file resolved against the file's directory
    /// (`server_key`).
    package var serverKey: String?
    /// Seconds to wait for the coordinator's answer (`timeout`).
    package var timeout: Double?
    /// How long `wait` and `submit --wait` keep retrying a coordinator that went away, in seconds
    /// (`reconnect_seconds`; 0: give up at once, as `--reconnect 0`).
    package var reconnectSeconds: Double?

    /// Settings as given; `nil`: not set.
    package init(coordinator: String? = nil, keyFile: String? = nil, serverKey: String? = nil, timeout: Double? = nil,
                 reconnectSeconds: Double? = nil) {
        self.coordinator = coordinator
        self.keyFile = keyFile
        self.serverKey = serverKey
        self.timeout = timeout
        self.reconnectSeconds = reconnectSeconds
    }

    /// The keys the file may have.
    package static let keys = ["coordinator", "key_file", "server_key", "timeout", "reconnect_seconds"]

    /// The variable naming the file (`none`: no file).
    package static let environmentVariable = "DUBFARM_CLIENT_CONFIG"

    /// Where the file is looked for: `$DUBFARM_CLIENT_CONFIG` when set and not empty (`none`:
    /// nowhere, `nil`), else `$XDG_CONFIG_HOME/dubfarm/client.yml` (an absolute
    /// `XDG_CONFIG_HOME`), else `$HOME/.config/dubfarm/client.yml`; `nil` without a `HOME`.
    package static func defaultPath(environment: [String: String]) -> String? {
        if let explicit = environment[environmentVariable], !explicit.isEmpty {
            return explicit == "none" ? nil : ClientPath.expandingTilde(explicit, home: environment["HOME"])
        }
        if let xdg = environment["XDG_CONFIG_HOME"], xdg.hasPrefix("/") {
            return ClientPath.clean(xdg + "/dubfarm/client.yml")
        }
        if let home = environment["HOME"], !home.isEmpty {
            return ClientPath.clean(home + "/.config/dubfarm/client.yml")
        }
        return nil
    }

    /// Reads the file at `path`; `nil` when there is none. Errors
    /// (`DubfarmError(.configuration)`) name the file.
    package static func load(path: String) throws -> ClientConfigFile? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        guard !isDirectory.boolValue else {
            throw DubfarmError(.configuration, "client configuration \(path): is a directory, not a file")
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw DubfarmError(.configuration, "cannot read the client configuration \(path): \(error.localizedDescription)")
        }
        return try parse(yaml: text, path: path)
    }

    /// Parses the file's text; `path` names it in messages and anchors its relative paths.
    ///
    /// Unknown keys, values of the wrong type and durations out of range (`timeout` must be above
    /// 0, `reconnect_seconds` 0 or more) are errors
    /// (`DubfarmError(.configuration)`) naming the key and the file. An empty file sets nothing.
    package static func parse(yaml: String, path: String) throws -> ClientConfigFile {
        let root: Node?
        do { root = try Yams.compose(yaml: yaml) } catch {
            throw DubfarmError(.configuration, "client configuration \(path) is not valid YAML: \(error)")
        }
        var config = ClientConfigFile()
        guard let root, root.null == nil else { return config }
        guard case .mapping(let mapping) = root else {
            throw DubfarmError(.configuration, "client configuration \(path): the top level must be a mapping of \(keys.joined(separator: ", "))")
        }
        let directory = ClientPath.directory(of: path)
        for (k, v) in mapping {
            let key = k.scalar?.string ?? "?"
            guard keys.contains(key) else {
                throw DubfarmError(.configuration, "client configuration \(path): unknown key '\(key.prefix(40))'; known keys: \(keys.joined(separator: ", "))")
            }
            if v.null != nil { continue }
            guard let value = v.scalar?.string.trimmingCharacters(in: .whitespaces) else {
                throw DubfarmError(.configuration, "client configuration \(path): \(key) must be a single value")
            }
            func text() throws -> String? {
                guard v.bool == nil else {
                    throw DubfarmError(.configuration, "client configuration \(path): \(key) must be text, not \(value)")
                }
                return value.isEmpty ? nil : value
            }
            func seconds(allowZero: Bool = false) throws -> Double {
                guard let d = Double(value), d.isFinite, d > 0 || (allowZero && d == 0) else {
                    throw DubfarmError(.configuration, "client configuration \(path): \(key) must be a number of seconds \(allowZero ? "(0 or more)" : "above 0") (\(value.prefix(40)) given)")
                }
                return d
            }
            switch key {
            case "coordinator": config.coordinator = try text()
            case "key_file": config.keyFile = try text().map { ClientPath.resolve($0, against: directory) }
            case "server_key": config.serverKey = try text().map { keptAsGiven($0) ? $0 : ClientPath.resolve($0, against: directory) }
            case "timeout": config.timeout = try seconds()
            case "reconnect_seconds": config.reconnectSeconds = try seconds(allowZero: true)
            default: break
            }
        }
        return config
    }

    /// Whether a `server_key` value is kept as given: a CURVE public key (40 characters of Z85,
    /// which may hold a `/`), or a value that does not look like a path (no `/`, no leading `~`,
    /// no `.key` ending). Other values are paths, resolved against the file's directory.
    static func keptAsGiven(_ value: String) -> Bool {
        let z85 = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#")
        let looksLikePath = value.contains("/") || value.hasPrefix("~") || value.hasSuffix(".key")
        return (value.count == 40 && value.allSatisfy(z85.contains)) || !looksLikePath
    }
}
