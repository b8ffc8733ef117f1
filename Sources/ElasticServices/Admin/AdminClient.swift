import ElasticCore
import ElasticTransport
import ElasticWire
import Foundation
import NIOSSL
import X509

/// The administrator's side: status and tokens over mutual TLS with the admin certificate that
/// `elastic certs init` wrote into the controller's data dir.
public struct AdminClient: Sendable {
    public let controller: Endpoint
    private let tls: NIOSSLContext

    /// Loads the admin certificate from `<dataDirectory>/pki`. Without `controller`, uses the
    /// address a running controller recorded in the data dir.
    public init(dataDirectory: URL, controller: Endpoint?) throws {
        let pki = PKIFiles.controllerDirectory(dataDirectory: dataDirectory)
        let identity: Identity
        let ca: Certificate
        do {
            identity = try PKIFiles.readIdentity(certificate: pki.appendingPathComponent(PKIFiles.adminCertificate), key: pki.appendingPathComponent(PKIFiles.adminKey))
            ca = try PKIFiles.readCertificate(pki.appendingPathComponent(PKIFiles.caCertificate))
        } catch {
            throw ElasticError("cannot load the admin certificate: \(error); pass the controller's --data-dir (where 'elastic certs init' wrote pki/admin.pem)")
        }
        if let controller {
            self.controller = controller
        } else {
            let file = ControllerService.addressFile(dataDirectory: dataDirectory)
            guard let text = try? String(contentsOf: file, encoding: .utf8),
                  let recorded = Endpoint(parsing: text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
                throw ElasticError("no running controller is recorded in \(dataDirectory.path); start one with 'elastic controller --data-dir \(dataDirectory.path)', or pass --controller HOST:PORT")
            }
            self.controller = recorded
        }
        self.tls = try TLSContexts.mutualClient(identity: identity, ca: ca)
    }

    public func status() async throws -> ClusterStatus {
        guard case .statusReply(let status) = try await ask(.statusRequest) else { throw unexpected() }
        return status
    }

    public func createToken(ttl: Duration?, uses: UInt32?, description: String) async throws -> TokenCreated {
        guard case .tokenCreated(let created) = try await ask(.tokenCreate(TokenCreate(ttl: ttl, uses: uses, description: description))) else { throw unexpected() }
        return created
    }

    public func listTokens() async throws -> [TokenInfo] {
        guard case .tokenList(let tokens) = try await ask(.tokenListRequest) else { throw unexpected() }
        return tokens
    }

    public func revokeToken(id: String) async throws -> String {
        guard case .done(let message) = try await ask(.tokenRevoke(id: id)) else { throw unexpected() }
        return message
    }

    public func revokeNode(_ node: String) async throws -> String {
        guard case .done(let message) = try await ask(.nodeRevoke(node: node)) else { throw unexpected() }
        return message
    }

    public func submitJob(json: [UInt8]) async throws -> String {
        guard case .done(let message) = try await ask(.submitJob(json: json)) else { throw unexpected() }
        return message
    }

    private func ask(_ message: ControlMessage) async throws -> ControlMessage {
        try await ControlClient.exchange(message, with: controller, tls: tls)
    }

    private func unexpected() -> ElasticError {
        ElasticError("the controller at \(controller) gave an unexpected answer; is it the same version as this CLI?")
    }
}
