// File-descriptor handles: the native owner of every fd vfio-bridge opens (container, group,
// device). JavaScript sees an opaque, type-tagged external; the fd is closed by close(), by garbage
// collection, or at environment teardown, whichever comes first.
#pragma once

#include <node_api.h>

#include <memory>

#include "errors.h"
#include "module.h"

namespace vfio_bridge {

struct CallOrder;

/** class FdResource - one owned fd and the context used in its error messages. */
class FdResource : public Resource {
 public:
  void Release() override;
  /**
   * Closed - called once, when the fd is given up (closed here, or handed to a pool thread to
   * close): frees what lives only as long as the fd. Nothing by default.
   */
  virtual void Closed() {}
  /** Kind - what the fd is, for handles that carry more than the fd (0: a plain fd). */
  virtual int Kind() const { return 0; }

  int fd = -1;
  ErrorContext where;
  /** The calls queued in order on this handle (QueueInOrder); made by the first. */
  std::shared_ptr<CallOrder> order;
};

/** NewHandle - wrap @fd (ownership passes to the handle). Returns nullptr if creation threw. */
napi_value NewHandle(napi_env env, int fd, ErrorContext where);

/**
 * WrapHandle - as NewHandle, for a resource of a subclass the caller made (its fd and where set);
 * ownership passes to the handle.
 */
napi_value WrapHandle(napi_env env, FdResource* r);

/**
 * GetHandle - the open FdResource behind @value, or nullptr after throwing: TypeError if @value is
 * not a handle, VfioError (code ECLOSED) if it has been closed.
 */
FdResource* GetHandle(napi_env env, napi_value value, const char* op);

/** ThrowErrno - ThrowVfioError for @op on @handle with the current errno. */
napi_value ThrowErrno(napi_env env, const char* op, const FdResource* handle, int err,
                      const std::string& detail = std::string());

}  // namespace vfio_bridge
