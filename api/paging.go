package api

import (
	"net/http"
	"net/url"
	"strconv"
)

// Paging of the /api/v1 lists.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// page is the envelope of a paginated list.
type page[T any] struct {
	Items  []T   `json:"items"`
	Total  int64 `json:"total"`
	Offset int64 `json:"offset"`
	Limit  int64 `json:"limit"`
}

// listQuery is the query of a paginated list.
type listQuery struct {
	url.Values
	offset, limit int64
}

// parseList checks the query of a paginated list (offset, limit and the
// route's own parameters) and reads offset and limit.
func parseList(r *http.Request, known ...string) (listQuery, error) {
	q, err := only(r, append([]string{"offset", "limit"}, known...)...)
	if err != nil {
		return listQuery{}, err
	}
	lq := listQuery{Values: q, limit: defaultLimit}
	if v := q.Get("limit"); v != "" || q.Has("limit") {
		lq.limit, err = strconv.ParseInt(v, 10, 64)
		if err != nil || lq.limit < 1 || lq.limit > maxLimit {
			return listQuery{}, errorf(http.StatusBadRequest, "limit must be an integer from 1 to %d", maxLimit)
		}
	}
	if v := q.Get("offset"); v != "" || q.Has("offset") {
		lq.offset, err = strconv.ParseInt(v, 10, 64)
		if err != nil || lq.offset < 0 || lq.offset > 1<<40 {
			return listQuery{}, errorf(http.StatusBadRequest, "offset must be a non-negative integer")
		}
	}
	return lq, nil
}

// pageOf is the page of q of a list of total items, of which items are
// the ones on the page.
func pageOf[T any](items []T, total int64, q listQuery) page[T] {
	return page[T]{Items: nonNil(items), Total: total, Offset: q.offset, Limit: q.limit}
}

// slicePage pages a list held in memory.
func slicePage[T any](all []T, q listQuery) page[T] {
	n := int64(len(all))
	lo := min(q.offset, n)
	hi := min(lo+q.limit, n)
	return pageOf(all[lo:hi], n, q)
}
