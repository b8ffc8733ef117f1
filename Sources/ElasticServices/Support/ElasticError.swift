import ElasticTransport
import ElasticWire
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// An error a user reads: one sentence that says what happened and, where it can, what to do.
public struct ElasticError: Error, Sendable, CustomStringConvertible, LocalizedError {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
    public var errorDescription: String? { message }

    /// Turns a transport error met while talking to `endpoint` into a sentence for the user.
    public static func talking(to endpoint: Endpoint, _ error: any Error) -> ElasticError {
        if let error = error as? ElasticError { return error }
        if let transport = error as? TransportError {
            if case .unexpectedPeer = transport { return ElasticError("refusing \(endpoint): \(transport)") }
            return ElasticError("\(transport) (talking to \(endpoint))")
        }
        if let refused = error as? Refused {
            return ElasticError("the controller at \(endpoint) refused: \(refused.message)")
        }
        if let connection = error as? NIOConnectionError {
            if connection.connectionErrors.isEmpty {
                return ElasticError("cannot resolve host '\(endpoint.host)': check the name, or use an IP address")
            }
            let reasons = connection.connectionErrors.map { "\($0.error)" }
            if reasons.contains(where: { $0.contains("refused") || $0.contains("111") }) {
                return ElasticError("connection refused by \(endpoint): is 'elastic controller' running and listening there?")
            }
            return ElasticError("cannot connect to \(endpoint): \(reasons.joined(separator: "; "))")
        }
        if let ioError = error as? IOError, ioError.errnoCode == ECONNREFUSED {
            return ElasticError("connection refused by \(endpoint): is 'elastic controller' running and listening there?")
        }
        if let channelError = error as? ChannelError, case .connectTimeout = channelError {
            return ElasticError("timed out connecting to \(endpoint): check the address and that nothing blocks the port")
        }
        let text = String(describing: error)
        if text.uppercased().contains("CERTIFICATE") || text.uppercased().contains("UNKNOWN_CA") {
            return ElasticError("the TLS handshake with \(endpoint) failed on a certificate (\(text)): this certificate is not trusted by that cluster, or it expired; join again with a token")
        }
        if error is NIOSSLError || text.contains("BoringSSL") {
            return ElasticError("the TLS session with \(endpoint) failed: \(text)")
        }
        if let channelError = error as? ChannelError, channelError == .ioOnClosedChannel || channelError == .alreadyClosed || channelError == .eof {
            return ElasticError("the controller at \(endpoint) closed the connection (under TLS 1.3 this is how a refused client certificate shows: check that it comes from this cluster's CA and is still valid)")
        }
        return ElasticError("talking to \(endpoint) failed: \(text)")
    }
}

/// `HOST:PORT`, with `[v6]:PORT` for IPv6 literals.
public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; nil with no port, an empty host, or a port outside 0…65535.
    public init?(parsing text: String) {
        var host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        host = host.trimmingCharacters(in: .whitespaces)[...]
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        self.init(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
