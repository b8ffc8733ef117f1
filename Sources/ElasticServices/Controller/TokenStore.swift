import Crypto
import ElasticCore
import ElasticTransport
import Foundation

/// The bootstrap token registry: only a SHA-256 of each secret is kept. Every change is made
/// durable (through `persist`: the controller's journal) before it is acknowledged.
struct TokenStore {
    private(set) var registry: BootstrapTokens
    private let persist: (BootstrapTokens) throws -> Void

    init(registry: BootstrapTokens = BootstrapTokens(), persist: @escaping (BootstrapTokens) throws -> Void) {
        self.registry = registry
        self.persist = persist
    }

    /// A registry kept in a JSON file of its own (`tokens.json`): how data dirs of earlier
    /// versions kept tokens; the controller imports such a file into its journal once.
    init(file: URL) throws {
        let registry: BootstrapTokens
        if FileManager.default.fileExists(atPath: file.path) {
            do {
                registry = Self.registry(try JSONDecoder().decode([DurableState.Token].self, from: Data(contentsOf: file)))
            } catch {
                throw ElasticError("cannot read the token store \(file.path): \(error.localizedDescription); move it aside to start with no tokens")
            }
        } else {
            registry = BootstrapTokens()
        }
        self.init(registry: registry) { registry in
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let text = String(decoding: try encoder.encode(Self.durable(registry)), as: UTF8.self)
            try PKIFiles.write(text + "\n", to: file, mode: 0o600)
        }
    }

    static func registry(_ tokens: [DurableState.Token]) -> BootstrapTokens {
        BootstrapTokens(records: tokens.map {
            BootstrapTokens.Record(
                id: $0.id, secretHash: hexBytes($0.secretSHA256), createdAt: $0.createdAt, expiresAt: $0.expiresAt,
                usesLeft: $0.usesLeft, uses: $0.uses, description: $0.description)
        })
    }

    static func durable(_ registry: BootstrapTokens) -> [DurableState.Token] {
        registry.sorted.map {
            DurableState.Token(id: $0.id, secretSHA256: $0.secretHash.map { String(format: "%02x", $0) }.joined(), createdAt: $0.createdAt,
                               expiresAt: $0.expiresAt, usesLeft: $0.usesLeft, uses: $0.uses, description: $0.description)
        }
    }

    static func hash(secret: String) -> [UInt8] { Array(SHA256.hash(data: Array(secret.utf8))) }

    mutating func create(ttl: Duration?, uses: UInt32?, description: String, now: Int64) throws -> (id: String, token: String, expiresAt: Int64?) {
        var id: String
        repeat { id = randomToken(length: 6) } while registry.records[id] != nil
        let secret = randomToken(length: 16)
        let expiresAt = ttl.map { now + max(1, $0.milliseconds / 1000) }
        registry.add(BootstrapTokens.Record(
            id: id, secretHash: Self.hash(secret: secret), createdAt: now, expiresAt: expiresAt, usesLeft: uses, description: description))
        _ = registry.prune(now: now)
        try save()
        return (id, "\(id).\(secret)", expiresAt)
    }

    /// Whether `redeem` would succeed, without spending a use.
    func check(id: String, secret: String, now: Int64) -> Result<Void, BootstrapTokens.Refusal> {
        registry.check(id: id, secretHash: Self.hash(secret: secret), now: now)
    }

    /// Spends a use; the registry changes (and is saved) only on success.
    mutating func redeem(id: String, secret: String, now: Int64) -> Result<Void, BootstrapTokens.Refusal> {
        let before = registry
        let result = registry.redeem(id: id, secretHash: Self.hash(secret: secret), now: now)
        if case .success = result {
            do {
                try save()
            } catch {
                registry = before
                return .failure(.unknown(id: id))
            }
        }
        return result
    }

    mutating func revoke(id: String) throws -> Bool {
        guard registry.revoke(id: id) else { return false }
        try save()
        return true
    }

    private func save() throws {
        try persist(registry)
    }
}

private let tokenAlphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")

private func randomToken(length: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    return String((0..<length).map { _ in tokenAlphabet[Int(generator.next(upperBound: UInt64(tokenAlphabet.count)))] })
}

private func hexBytes(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var iterator = text.makeIterator()
    while let high = iterator.next(), let low = iterator.next() {
        guard let byte = UInt8(String([high, low]), radix: 16) else { return [] }
        bytes.append(byte)
    }
    return bytes
}
