import DubfarmCore
import FarmConfig
import FarmSecurity
import Foundation
import Logging
import Synchronization
import ZeroMQ

/// The coordinator's CURVE setup (`security.*`): its key pair, and a ZAP handler that admits on
/// each endpoint only the public keys in that endpoint's allow-list, and logs every refusal with
/// the key's prefix and the peer's address.
///
/// The allow-lists are read again at most once a second as peers connect, so adding a key file
/// to `authorized_workers` admits a new worker without a restart. A list that becomes unreadable
/// keeps its last good contents (and the error is logged).
final class CurveSecurity: Sendable {
    let keys: CurveKeyPair
    let handler: ZAPHandler

    /// The allow-lists last read, and when.
    final class PolicyCache: Sendable {
        let state: Mutex<(loadedAt: ContinuousClock.Instant, policy: AccessPolicy)>
        init(_ policy: AccessPolicy) { state = Mutex((loadedAt: ContinuousClock.now, policy: policy)) }
    }

    /// Loads the keys and starts the ZAP handler; `nil` when CURVE is off (no `secret_key_file`).
    /// Throws a configuration error naming the file and the reason when a key file is bad.
    static func start(config: FarmConfiguration, logger: Logger) throws -> CurveSecurity? {
        guard let file = config.secretKeyFile else {
            logger.warning("CURVE is off (security.secret_key_file is empty): both endpoints are plaintext and admit anyone who can reach them")
            return nil
        }
        let keys: CurveKeyPair
        do { keys = try KeyFiles.loadKeyPair(file, what: "coordinator's secret key file") } catch let e as DubfarmError {
            throw DubfarmError(.configuration, "security.secret_key_file: \(e.message)")
        }
        if KeyFiles.isExposed(file) {
            logger.warning("the coordinator's secret key file can be read by other users; chmod 600 it (or 0440 with this process's own group)", metadata: ["file": .string(file)])
        }
        let policy = try loadPolicy(config)
        let security = CurveSecurity(keys: keys, policy: policy, config: config, logger: logger)
        do { try security.handler.start(context: .shared) } catch {
            throw DubfarmError(.configuration, "cannot start the ZAP authentication handler: \(error)")
        }
        logger.info("CURVE is on: only authorized keys are admitted", metadata: [
            "public_key": .string(keys.publicKey), "workers": .stringConvertible(policy.workers.count),
            "clients": .stringConvertible(policy.clients.count),
        ])
        return security
    }

    static func loadPolicy(_ config: FarmConfiguration) throws -> AccessPolicy {
        func load(_ path: String?, _ key: String) throws -> Set<String> {
            guard let path else { return [] }
            do { return try KeyFiles.loadAuthorizedKeys(path) } catch let e as DubfarmError {
                throw DubfarmError(.configuration, "\(key): \(e.message)")
            }
        }
        return AccessPolicy(workers: try load(config.authorizedWorkers, "security.authorized_workers"),
                            clients: try load(config.authorizedClients, "security.authorized_clients"))
    }

    private init(keys: CurveKeyPair, policy: AccessPolicy, config: FarmConfiguration, logger: Logger) {
        self.keys = keys
        let cache = PolicyCache(policy)
        handler = ZAPHandler { request in
            let current: AccessPolicy = cache.state.withLock { s in
                if ContinuousClock.now - s.loadedAt > .seconds(1) {
                    s.loadedAt = .now
                    do { s.policy = try Self.loadPolicy(config) } catch {
                        logger.error("cannot reload the allow-lists; keeping the previous ones: \(error)")
                    }
                }
                return s.policy
            }
            let d = current.decide(domain: request.domain, mechanism: request.mechanism, publicKey: request.curvePublicKey)
            let meta: Logger.Metadata = [
                "peer": .string(request.address), "key": .string(request.curvePublicKey.map(AccessPolicy.prefix) ?? "none"),
                "role": .string(d.role),
            ]
            if d.allowed {
                logger.debug("admitted a \(d.role) key", metadata: meta)
                return .allow(userID: d.role)
            }
            logger.warning("refused a \(d.role): \(d.reason)", metadata: meta)
            return .deny(d.reason)
        }
    }

    /// Endpoint options for the work (`workers`) or control (`clients`) endpoint.
    func apply(to options: inout RouterEndpoint.Options, domain: String) {
        options.curveSecretKey = keys.secretKey
        options.zapDomain = domain
    }

    func stop() { handler.stop() }
}
