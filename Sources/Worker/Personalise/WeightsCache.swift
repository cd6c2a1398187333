import Crypto
import DubfarmCore
import Foundation

/// A job's personalised weights on this worker: where the file is and its SHA-256.
package struct PersonalisedWeights: Sendable, Hashable {
    package var sha256: String
    /// `model.safetensors` in a directory of its own (the stage adds the manifest it needs).
    package var file: URL
    package var directory: URL { file.deletingLastPathComponent() }
}

/// The worker's store of personalised weights, by SHA-256 (`<root>/<sha256>/model.safetensors`).
/// A file is checked against its hash before it is kept, written under a temporary name and
/// renamed, so a name in the cache always means those exact bytes.
package struct WeightsCache: Sendable {
    package let root: URL

    package init(root: URL) {
        self.root = root
    }

    /// `$DUBFARM_CACHE_DIR/weights`, else `$XDG_CACHE_HOME/dubfarm/weights`, else `~/.cache/dubfarm/weights`.
    package static func defaultRoot(environment: [String: String] = ProcessInfo.processInfo.environment) -> URL {
        if let dir = environment["DUBFARM_CACHE_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir).appendingPathComponent("weights")
        }
        let base = environment["XDG_CACHE_HOME"].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
            ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache")
        return base.appendingPathComponent("dubfarm/weights")
    }

    /// The cached weights named `sha256`, if present.
    package func weights(_ sha256: String) -> PersonalisedWeights? {
        let file = root.appendingPathComponent(sha256).appendingPathComponent("model.safetensors")
        return FileManager.default.fileExists(atPath: file.path) ? PersonalisedWeights(sha256: sha256, file: file) : nil
    }

    /// Keeps `bytes` as the weights named `sha256`; throws when they do not hash to it.
    @discardableResult
    package func store(_ bytes: [UInt8], sha256: String) throws -> PersonalisedWeights {
        let actual = Self.sha256(bytes)
        guard actual == sha256 else {
            throw DubfarmError(.protocolViolation, "weights \(sha256.prefix(16))…: the \(bytes.count) bytes received hash to \(actual.prefix(16))…")
        }
        if let existing = weights(sha256) { return existing }
        let dir = root.appendingPathComponent(sha256)
        let file = dir.appendingPathComponent("model.safetensors")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let tmp = dir.appendingPathComponent(".model.safetensors.\(UUID().uuidString)")
            try Data(bytes).write(to: tmp)
            guard rename(tmp.path, file.path) == 0 else {
                let e = errno
                try? FileManager.default.removeItem(at: tmp)
                throw DubfarmError(.io, String(cString: strerror(e)))
            }
        } catch let e as DubfarmError {
            throw DubfarmError(.io, "cannot keep personalised weights in \(dir.path): \(e.message)")
        } catch {
            throw DubfarmError(.io, "cannot keep personalised weights in \(dir.path): \(error.localizedDescription)")
        }
        return PersonalisedWeights(sha256: sha256, file: file)
    }

    /// Hex SHA-256 of `bytes`.
    package static func sha256(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }
}
