/* index/faiss_capi.cpp placeholder */
namespace {}
