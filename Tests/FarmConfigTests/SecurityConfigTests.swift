import DubfarmCore
import Foundation
import Testing
@testable import FarmConfig

@Suite("Configuration: security and credentials")
struct SecurityConfigTests {
    @Test("passwords are redacted wherever they sit in the URL", arguments: [
        ("postgresql://farm:hunter2@db:5432/dubfarm", "postgresql://farm:***@db:5432/dubfarm"),
        ("postgresql://farm:p@ss/w:rd@db/dubfarm", "postgresql://farm:***@db/dubfarm"),
        ("postgresql://farm@db/dubfarm?password=hunter2&sslmode=require", "postgresql://farm@db/dubfarm?password=***&sslmode=require"),
        ("host=db user=farm password=hunter2 dbname=dubfarm", "host=db user=farm password=*** dbname=dubfarm"),
        ("postgresql://postgres@/farm?host=/tmp/x&port=5432", "postgresql://postgres@/farm?host=/tmp/x&port=5432"),
    ])
    func redaction(url: String, shown: String) {
        #expect(redactURL(url) == shown)
    }

    @Test("security keys come from the file and the agreed environment variables")
    func securityKeys() throws {
        let env = ["DUBFARM_SECURITY_SECRET_KEY_FILE": "/etc/dubfarm/coordinator.key_secret",
                   "DUBFARM_SECURITY_AUTHORIZED_WORKERS": "/etc/dubfarm/workers",
                   "DUBFARM_SECURITY_AUTHORIZED_CLIENTS": "/etc/dubfarm/clients"]
        let l = try ConfigurationLoader.load(file: nil, environment: env)
        #expect(l.configuration.secretKeyFile == "/etc/dubfarm/coordinator.key_secret")
        #expect(l.configuration.authorizedWorkers == "/etc/dubfarm/workers")
        #expect(l.configuration.authorizedClients == "/etc/dubfarm/clients")
        #expect(l.render().contains("secret_key_file: /etc/dubfarm/coordinator.key_secret"))
        // Off by default.
        #expect(FarmConfiguration().secretKeyFile == nil)
    }

    @Test("CURVE on without allow-lists is a configuration error naming the key")
    func curveNeedsAllowLists() {
        #expect { try ConfigurationLoader.load(file: nil, environment: ["DUBFARM_SECURITY_SECRET_KEY_FILE": "/k"]) } throws: { e in
            (e as? DubfarmError)?.message.contains("security.authorized_workers") == true
        }
    }

    @Test("a password from url_file or the environment never appears in config check's output")
    func neverShown() throws {
        let f = FileManager.default.temporaryDirectory.appendingPathComponent("url-\(UUID().uuidString)")
        try "postgresql://farm:Sup3r-S3cret@db:5432/dubfarm\n".write(to: f, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: f) }
        for env in [["DUBFARM_DATABASE_URL_FILE": f.path], ["DUBFARM_DATABASE_URL": "postgresql://farm:Sup3r-S3cret@db/dubfarm"]] {
            let l = try ConfigurationLoader.load(file: nil, environment: env)
            #expect(l.configuration.databaseURL.contains("Sup3r-S3cret"))
            #expect(!l.render().contains("Sup3r-S3cret"))
            #expect(!l.configuration.redactedDatabaseURL.contains("Sup3r-S3cret"))
        }
    }
}
