import ArgumentParser
import FarmClient
import DubfarmCore
import FarmSecurity
import Foundation
import ZeroMQ

/// `dubfarm keys generate`: CURVE key pairs for the coordinator, workers and CLI clients.
struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Make CURVE key pairs (encryption and authentication of both endpoints).",
        discussion: """
            One pair per machine or user: the coordinator's (security.secret_key_file), each worker's \
            (--key-file) and each CLI user's (--key-file). Copy only public NAME.key files around: a \
            worker's into the coordinator's authorized_workers directory, a user's into \
            authorized_clients, and the coordinator's to the workers and users (--server-key).
            """,
        subcommands: [Generate.self])

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write NAME.key (public, 0644) and NAME.key_secret (public and secret, 0600) into a directory.")

        @Option(name: .long, help: "Directory for the key files (created 0700 if missing).")
        var out: String

        @Option(name: .long, help: "Base name of the files (default: this host's name).")
        var name: String?

        func run() throws {
            let name = self.name ?? ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "dubfarm"
            let pair: CurveKeyPair
            do { pair = try CurveKeyPair.generate() } catch {
                throw DubfarmError(.unsupported, "libzmq cannot make CURVE keys (built without libsodium/tweetnacl?): \(error)")
            }
            let files = try KeyFiles.write(pair, name: name, directory: out)
            print("public key:  \(files.publicFile)   \(pair.publicKey)")
            print("secret key:  \(files.secretFile)   (mode 0600; keep it on this machine)")
        }
    }
}

/// `--key-file` and `--server-key` for workers and CLI clients (CURVE).
struct CurveOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("This machine's CURVE secret key file (NAME.key_secret from `dubfarm keys generate`).",
                                            discussion: "Default: $DUBFARM_KEY_FILE."))
    var keyFile: String?

    @Option(name: .long, help: ArgumentHelp("The coordinator's CURVE public key (40 characters of Z85) or its public key file.",
                                            discussion: "Default: $DUBFARM_SERVER_KEY."))
    var serverKey: String?

    /// The CURVE settings from the flags, then the environment, then the client config file,
    /// then `fallback` (a local farm's keys); `nil` when none is given (plaintext). Errors name
    /// the file and the reason.
    func resolve(config: ClientConfigFile? = nil, fallback: (keyFile: String, serverKey: String)? = nil) throws -> (serverKey: String, keys: CurveKeyPair)? {
        let env = ProcessInfo.processInfo.environment
        var keyFile = self.keyFile ?? env["DUBFARM_KEY_FILE"].flatMap { $0.isEmpty ? nil : $0 }
        var serverKey = self.serverKey ?? env["DUBFARM_SERVER_KEY"].flatMap { $0.isEmpty ? nil : $0 }
        if keyFile == nil && serverKey == nil {
            keyFile = config?.keyFile
            serverKey = config?.serverKey
        }
        if let k = keyFile, let s = serverKey {
            return (try KeyFiles.resolveServerKey(s), try KeyFiles.loadKeyPair(k))
        }
        if keyFile != nil {
            throw DubfarmError(.configuration, "--key-file (DUBFARM_KEY_FILE, key_file in the client config file) needs --server-key (DUBFARM_SERVER_KEY, server_key): the coordinator's CURVE public key")
        }
        if serverKey != nil {
            throw DubfarmError(.configuration, "--server-key (DUBFARM_SERVER_KEY, server_key in the client config file) needs --key-file (DUBFARM_KEY_FILE, key_file): this machine's own CURVE key pair")
        }
        guard let fallback else { return nil }
        return (try KeyFiles.resolveServerKey(fallback.serverKey), try KeyFiles.loadKeyPair(fallback.keyFile))
    }
}
