//! STUN/TURN (RFC 8489, RFC 8656) for Parvis. The engine lands with the netstack issue.
