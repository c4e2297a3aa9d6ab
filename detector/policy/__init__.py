"""`detector policy-check`: can the API server's audit policy feed each rule what it reads?"""
