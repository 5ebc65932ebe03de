//! A client's Messages request as the canonical request, and the answer
//! back in the Messages dialect (a Message, stream events, errors).
