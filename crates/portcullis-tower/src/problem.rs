//! The one place where gateway error responses are built.

use crate::request_id::RequestId;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use portcullis_core::problem::{Problem, CONTENT_TYPE};

/// Builds an `application/problem+json` response for a request, filling in its id and
/// path. `B` is the response body type of the service being wrapped.
pub fn for_request<B: From<Bytes>, T>(req: &Request<T>, problem: Problem) -> Response<B> {
    for_request_of(req.extensions(), req.uri(), problem)
}

/// Builds an `application/problem+json` response from a complete problem.
pub fn response<B: From<Bytes>>(problem: Problem) -> Response<B> {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    with_body(status, problem.to_json())
}

/// An `application/problem+json` response with a body already written.
pub fn with_body<B: From<Bytes>>(status: StatusCode, json: String) -> Response<B> {
    let mut res = Response::new(B::from(Bytes::from(json)));
    // No room is reserved for the fields the layers above add: with head lines (as the
    // gateway builds them) they are not in the map, and a map of twenty fields is a
    // 2.5 kB allocation, past the allocator's small sizes.
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}

/// The request's extension map, emptied, for the response that answers it.
///
/// Every map allocates its table at its first insertion; the request's is allocated
/// already (the client address, the request id), and the response's fields fit in it.
/// Nothing the request carried passes to the response: its entries are dropped.
pub fn recycled_extensions(request: &mut http::Extensions) -> http::Extensions {
    let mut extensions = std::mem::take(request);
    extensions.clear();
    extensions
}

/// [`for_request`] from the parts of a request whose body was taken apart.
pub fn for_parts<B: From<Bytes>>(parts: &http::request::Parts, problem: Problem) -> Response<B> {
    for_request_of(&parts.extensions, &parts.uri, problem)
}

/// The request id from `extensions` and the path of `uri`, filled into `problem`.
fn for_request_of<B: From<Bytes>>(
    extensions: &http::Extensions,
    uri: &http::Uri,
    problem: Problem,
) -> Response<B> {
    let id = extensions
        .get::<RequestId>()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    response(problem.with_request_id(id).with_instance(uri.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycled_extensions_carry_nothing_of_the_request() {
        let mut request = http::Extensions::new();
        request.insert(crate::PeerAddr("127.0.0.1:9".parse().unwrap()));
        request.insert(7u32);
        let mut recycled = recycled_extensions(&mut request);
        assert!(recycled.is_empty(), "the request's entries are dropped");
        assert!(request.is_empty(), "the request keeps nothing either");
        recycled.insert(8u32);
        assert_eq!(recycled.get::<u32>(), Some(&8));
        assert!(recycled.get::<crate::PeerAddr>().is_none());
    }
}
