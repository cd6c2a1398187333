import Foundation

/// One effective setting as `dubfarm config check --json` prints it.
package struct EffectiveSetting: Codable, Sendable, Hashable {
    /// `section.key` as in `coordinator.yml`.
    package var key: String
    /// The value in effect (passwords in URLs are `***`, secret keys entirely).
    package var value: String
    /// `default`, `file` or `environment`.
    package var source: String
    /// The environment variable that overrides it.
    package var environment: String
}

extension ConfigurationLoader {
    /// Every key's effective value and where it came from, in `coordinator.yml` order.
    package var effectiveSettings: [EffectiveSetting] {
        ConfigKey.all.map { ck in
            var v = ck.value(in: configuration)
            if ck.path == "database.url" { v = redactURL(v) } else if ck.secret && !v.isEmpty { v = "***" }
            return EffectiveSetting(key: ck.path, value: v, source: (sources[ck.path] ?? .default).rawValue, environment: ck.environmentVariable)
        }
    }
}
