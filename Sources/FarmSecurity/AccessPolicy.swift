import DubfarmCore

/// Who may connect to which endpoint: the coordinator's allow-lists of CURVE public keys.
///
/// Pure: the ZAP handler asks it about every connecting peer (``decide(domain:mechanism:publicKey:)``).
package struct AccessPolicy: Sendable, Hashable {
    /// The ZAP domain of the work endpoint (workers).
    package static let workDomain = "dubfarm-work"
    /// The ZAP domain of the control endpoint (CLI clients).
    package static let controlDomain = "dubfarm-control"

    /// Public keys (Z85) of the workers admitted on the work endpoint.
    package var workers: Set<String>
    /// Public keys (Z85) of the clients admitted on the control endpoint.
    package var clients: Set<String>

    package init(workers: Set<String>, clients: Set<String>) {
        self.workers = workers
        self.clients = clients
    }

    /// The decision for one connecting peer.
    package struct Decision: Sendable, Hashable {
        package let allowed: Bool
        /// Why (for the log and the refused peer).
        package let reason: String
        /// `worker` or `client`: the role the key was admitted as.
        package let role: String
    }

    /// Admits a CURVE peer on `domain` only when its key is in that domain's allow-list. Anything
    /// else — another mechanism, an unknown domain, a missing key — is refused.
    package func decide(domain: String, mechanism: String, publicKey: String?) -> Decision {
        let role: String
        let list: Set<String>
        switch domain {
        case Self.workDomain:
            role = "worker"
            list = workers
        case Self.controlDomain:
            role = "client"
            list = clients
        default: return Decision(allowed: false, reason: "unknown ZAP domain '\(domain.prefix(40))'", role: "unknown")
        }
        guard mechanism == "CURVE" else {
            return Decision(allowed: false, reason: "\(mechanism.prefix(16)) peers are not accepted: CURVE is required", role: role)
        }
        guard let key = publicKey, !key.isEmpty else {
            return Decision(allowed: false, reason: "no CURVE public key", role: role)
        }
        guard list.contains(key) else {
            return Decision(allowed: false, reason: "\(role) key \(Self.prefix(key)) is not in the authorized \(role)s", role: role)
        }
        return Decision(allowed: true, reason: "OK", role: role)
    }

    /// The part of a key that is safe and useful to log (first 8 characters).
    package static func prefix(_ key: String) -> String { String(key.prefix(8)) + "…" }
}
