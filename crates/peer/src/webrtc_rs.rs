//! written by the webrtc task
